"""Optimizer steps on the student: AdamW resumed from a checkpoint's state, one step over an update's
rollouts (rows without loss count in the reference reduction), skipped when its gradient norm is not
finite, and GRPO's old-policy log-probs."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from rosd.io.files import read_torch
from rosd.method.objective import (
    loss_micro_batches,
    micro_batch_terms,
    micro_batch_value,
    sampled_logps,
    warmup_lr,
)
from rosd.method.scoring import batches
from rosd.method.sync_guard import summary
from rosd.training.checkpoints import SHARDED_TRAINER_STATE, TRAINER_STATE
from rosd.training.student import SingleProcess


def optimizer_for(model, train: dict, state_dir: Path):
    if (state_dir / SHARDED_TRAINER_STATE).exists():
        raise SystemExit(f"{state_dir} was trained with train.launcher=accelerate; a run keeps one launcher")
    optimizer = torch.optim.AdamW(model.parameters(), lr=train["lr"], weight_decay=train["weight_decay"])
    state_file = state_dir / TRAINER_STATE
    if state_file.exists():
        state = read_torch(state_file, rerun=state_dir)
        optimizer.load_state_dict(state["optimizer"])
        return optimizer, int(state["global_step"])
    return optimizer, 0


def _zero_missing_grads(parameters) -> None:
    """A step without loss still steps AdamW on a zero gradient (ref); torch skips None gradients."""
    for p in parameters:
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)


def train_step(model, optimizer, rows, targets, *, settings: dict, global_step: int, runtime=None) -> dict:
    """One optimizer step over one update's rollouts, all of them (rows without loss count in the
    reference reduction); ``targets[i]`` is row i's teacher target (None without one, or no list for
    GRPO). ``runtime`` (rosd/training/student.py) says where it runs: this process, or one of several.

    ``global_step`` is the training step (0-based) whose lr the warm-up gives: every update of one
    step (GRPO's mini-batches) shares it. A gradient norm that is not finite skips the update (ref
    dp_actor: zero_grad, no optimizer step): weights and AdamW state stay as they were, and the
    result says ``skipped``. The norm is the whole model's, the same on every process, so all skip.
    ``sampler_gap``: the sampled tokens' log-prob gap between the engine and these weights before
    the update (rosd.method.sync_guard), over the rows with loss."""
    train = settings["train"]
    runtime = runtime or SingleProcess(model, device=settings["device"], dtype=settings["dtype"])
    for group in optimizer.param_groups:
        group["lr"] = warmup_lr(train["lr"], global_step, train["warmup_steps"])
    optimizer.zero_grad(set_to_none=True)
    chunks, divisor = loss_micro_batches(list(zip(rows, targets or [None] * len(rows))), train["micro_batch"], train["reduction"])
    total_tokens = sum(len(r["response_ids"]) - r["loss_start"] for r in rows if r["distilled"])
    reported, gap = 0.0, [0.0, 0.0, 0.0, 0]
    for chunk, share in runtime.shard(chunks):
        per_token, weights, mask, chunk_gap = runtime.forward(micro_batch_terms, [r for r, _ in chunk], [t for _, t in chunk], settings=settings)
        value = micro_batch_value(per_token, weights, mask, reduction=train["reduction"], divisor=divisor, total_tokens=total_tokens)
        # Processes' gradients are averaged; times world_size, they add up to the whole step's.
        (value * (share * runtime.world_size)).backward()
        reported += share * value.item()
        if share:  # a repeated micro-batch (weight 0) is not compared twice
            gap = [gap[0] + chunk_gap[0], max(gap[1], chunk_gap[1]), gap[2] + chunk_gap[2], gap[3] + chunk_gap[3]]
    _zero_missing_grads(runtime.parameters())
    grad_norm = runtime.clip_grad_norm(train["grad_clip"])
    skipped = not math.isfinite(grad_norm)
    if skipped:
        optimizer.zero_grad(set_to_none=True)
    else:
        optimizer.step()
    sampler_gap = summary(runtime.total(gap[0]), runtime.largest(gap[1]), runtime.total(gap[2]), round(runtime.total(gap[3])))
    return {"loss": runtime.total(reported), "grad_norm": grad_norm, "lr": optimizer.param_groups[0]["lr"], "skipped": skipped, "sampler_gap": sampler_gap}


@torch.no_grad()
def record_old_logps(runtime, rows: list[dict], *, settings: dict) -> None:
    """GRPO's old policy: each row's sampled-token log-probs under the step's starting weights
    (every process computes all of them: under FSDP each forward is a collective)."""
    for chunk in batches(rows, settings["train"]["micro_batch"]):
        logps = runtime.forward(sampled_logps, chunk, settings=settings).float().cpu()
        for row, values in zip(chunk, logps.split([len(r["response_ids"]) for r in chunk])):
            row["old_logps"] = values.tolist()
