"""Training (SPEC §1.8-1.9): round r's optimizer steps, checkpoint r-1 -> checkpoint r.

The checkpoint carries the AdamW moments and the global step, so rounds resume one optimizer
(restarting AdamW each round would make every round's first step a sign step), and, for an EMA
teacher, the teacher's weights. The objective is the distillation loss, or GRPO for that baseline.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from statistics import mean

import torch

from rosd.checkpoints import EMA_TEACHER, SHARDED_TRAINER_STATE, TRAINER_STATE
from rosd.io import read_jsonl, write_json
from rosd.losses import (
    add_tail,
    chunked_over_tokens,
    clipped_policy_gradient,
    generalized_jsd,
    importance_weights,
    masked_token_mean,
    sampled_token_reverse_kl,
)
from rosd.methods import unsupported
from rosd.modeling import load_model, load_tokenizer
from rosd.scoring import batches, logp_of, response_tokens
from rosd.training import SingleProcess, load_student

log = logging.getLogger(__name__)


def _flat(rows: list[dict], key: str) -> torch.Tensor:
    return torch.cat([torch.as_tensor(r[key]) for r in rows])


def micro_batch_terms(model, rows, targets, *, settings: dict):
    """Per-token loss, token weights and loss mask of one micro-batch, each flat ``[N]`` over its
    response tokens; the vocabulary projection runs in chunks of ``train.token_chunk`` tokens."""
    train, method = settings["train"], settings["method"]
    hidden = response_tokens(model, [r["prompt_ids"] for r in rows], [r["response_ids"] for r in rows], pad_id=settings["pad_id"])
    device = hidden.device
    sampled = _flat(rows, "response_ids").to(device)
    sampler_logp = _flat(rows, "sampler_logps").float().to(device)
    mask = torch.cat([(torch.arange(len(r["response_ids"])) >= r["loss_start"]).float() for r in rows]).to(device)
    loss = method.get("loss", {})
    if method["objective"] == "distill":
        teacher = torch.cat([t["teacher_logp"] for t in targets]).to(device)
        support = torch.cat([t["support"].long() for t in targets]).to(device) if loss["support"] == "topk_tail" else None

    def token_terms(h, start, stop):
        logp = logp_of(model, h, train["temperature"])
        token_logp = logp.gather(-1, sampled[start:stop, None]).squeeze(-1)
        if method["objective"] == "grpo":
            return torch.stack([token_logp, token_logp], -1)
        if loss["support"] == "sampled_token":
            return torch.stack([sampled_token_reverse_kl(token_logp, teacher[start:stop]), token_logp], -1)
        student = add_tail(logp.gather(-1, support[start:stop])) if support is not None else logp
        divergence = generalized_jsd(student, teacher[start:stop], loss["alpha"], loss.get("entry_clip"))
        return torch.stack([divergence, token_logp], -1)

    terms = chunked_over_tokens(hidden, token_terms, train["token_chunk"])
    per_token, train_logp = terms[:, 0], terms[:, 1]
    if method["objective"] == "grpo":
        # ref baseline_grpo: the ratio against the step's starting policy, times the truncated
        # importance weight of that policy against the sampler (rollout_is: token, threshold is_clip).
        advantages = torch.cat([torch.full((len(r["response_ids"]),), r["advantage"]) for r in rows]).to(device)
        old_logp = _flat(rows, "old_logps").float().to(device)
        grpo = method["grpo"]
        per_token = clipped_policy_gradient(train_logp, old_logp, advantages, grpo["clip_low"], grpo["clip_high"], grpo["dual_clip"])
        return per_token, importance_weights(old_logp, sampler_logp, train["is_clip"]), mask
    return per_token, importance_weights(train_logp, sampler_logp, train["is_clip"]), mask


def optimizer_for(model, train: dict, state_dir: Path):
    if (state_dir / SHARDED_TRAINER_STATE).exists():
        raise SystemExit(f"{state_dir} was trained with train.launcher=accelerate; a run keeps one launcher")
    optimizer = torch.optim.AdamW(model.parameters(), lr=train["lr"], weight_decay=train["weight_decay"])
    state_file = state_dir / TRAINER_STATE
    if state_file.exists():
        state = torch.load(state_file, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        return optimizer, int(state["global_step"])
    return optimizer, 0


def warmup_lr(lr: float, global_step: int, warmup_steps: int) -> float:
    """The learning rate of optimizer step ``global_step`` (0-based): k/warmup_steps of ``lr`` during
    warm-up, so the first step has lr 0 (ref: constant schedule with warm-up), then ``lr``."""
    return lr * min(1.0, global_step / warmup_steps) if warmup_steps else lr


def loss_micro_batches(pairs: list[tuple[dict, object]], micro_batch: int, reduction: str) -> tuple[list[list], int]:
    """The micro-batches of (row, target) pairs that carry loss, and how many the reference
    reduction divides by.

    ``reference``: micro-batches over all of the update's rollouts in order, rows without loss
    (filtered groups, no teacher signal) counting as zeros, so the sum of token means is divided by
    ceil(rollouts / micro_batch) and the step shrinks with the kept fraction (ref). Otherwise the
    micro-batches of the rows with loss only (``kept_micro_batches`` divides by their count).
    """
    if reduction == "reference":
        chunks = list(batches(pairs, micro_batch))
        kept = [[p for p in chunk if p[0]["distilled"]] for chunk in chunks]
        return [chunk for chunk in kept if chunk], len(chunks)
    chunks = list(batches([p for p in pairs if p[0]["distilled"]], micro_batch))
    return chunks, len(chunks)


def micro_batch_value(per_token, weights, mask, *, reduction: str, divisor: int, total_tokens: int) -> torch.Tensor:
    """One micro-batch's share of the step's loss: its token mean over ``divisor`` micro-batches,
    or (``global``) its token sum over the step's ``total_tokens`` tokens with loss."""
    if reduction == "global":
        return (per_token * weights * mask).sum() / max(total_tokens, 1)
    return masked_token_mean(per_token, weights, mask) / divisor


def _zero_missing_grads(parameters) -> None:
    """A step without loss still steps AdamW on a zero gradient (ref); torch skips None gradients."""
    for p in parameters:
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)


def train_step(model, optimizer, rows, targets, *, settings: dict, global_step: int, runtime=None) -> dict:
    """One optimizer step over one update's rollouts, all of them (rows without loss count in the
    reference reduction); ``targets[i]`` is row i's teacher target (None without one, or no list for
    GRPO). ``runtime`` (rosd/training.py) says where it runs: this process, or one of several."""
    train = settings["train"]
    runtime = runtime or SingleProcess(model, device=settings["device"], dtype=settings["dtype"])
    for group in optimizer.param_groups:
        group["lr"] = warmup_lr(train["lr"], global_step, train["warmup_steps"])
    optimizer.zero_grad(set_to_none=True)
    chunks, divisor = loss_micro_batches(list(zip(rows, targets or [None] * len(rows))), train["micro_batch"], train["reduction"])
    total_tokens = sum(len(r["response_ids"]) - r["loss_start"] for r in rows if r["distilled"])
    reported = 0.0
    for chunk, share in runtime.shard(chunks):
        per_token, weights, mask = runtime.forward(micro_batch_terms, [r for r, _ in chunk], [t for _, t in chunk], settings=settings)
        value = micro_batch_value(per_token, weights, mask, reduction=train["reduction"], divisor=divisor, total_tokens=total_tokens)
        # Processes' gradients are averaged; times world_size, they add up to the whole step's.
        (value * (share * runtime.world_size)).backward()
        reported += share * value.item()
    _zero_missing_grads(runtime.parameters())
    grad_norm = runtime.clip_grad_norm(train["grad_clip"])
    optimizer.step()
    return {"loss": runtime.total(reported), "grad_norm": grad_norm, "lr": optimizer.param_groups[0]["lr"]}


def group_advantages(rows: list[dict]) -> None:
    """GRPO's advantage: the reward minus its group's mean reward (no std scaling)."""
    groups: dict[int, list[float]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r["reward"])
    for r in rows:
        r["advantage"] = r["reward"] - mean(groups[r["group"]])


def sampled_logps(model, rows: list[dict], *, settings: dict) -> torch.Tensor:
    """The sampled tokens' log-probs of one micro-batch, flat ``[N]``."""
    train = settings["train"]
    hidden = response_tokens(model, [r["prompt_ids"] for r in rows], [r["response_ids"] for r in rows], pad_id=settings["pad_id"])
    sampled = _flat(rows, "response_ids").to(hidden.device)

    def token_logp(h, start, stop):
        return logp_of(model, h, train["temperature"]).gather(-1, sampled[start:stop, None]).squeeze(-1)

    return chunked_over_tokens(hidden, token_logp, train["token_chunk"])


@torch.no_grad()
def record_old_logps(runtime, rows: list[dict], *, settings: dict) -> None:
    """GRPO's old policy: each row's sampled-token log-probs under the step's starting weights
    (every process computes all of them: under FSDP each forward is a collective)."""
    for chunk in batches(rows, settings["train"]["micro_batch"]):
        logps = runtime.forward(sampled_logps, chunk, settings=settings).float().cpu()
        for row, values in zip(chunk, logps.split([len(r["response_ids"]) for r in chunk])):
            row["old_logps"] = values.tolist()


def step_updates(rows: list[dict], targets: list | None, method: dict):
    """The optimizer updates of one step: the whole batch for distillation; for GRPO, the batch
    split into ``updates_per_batch`` mini-batches, one update each."""
    if method["objective"] != "grpo":
        return [(rows, targets)]
    parts = method["grpo"]["updates_per_batch"]
    size = -(-len(rows) // parts)
    return [(rows[i : i + size], None) for i in range(0, len(rows), size)]


def round_stats(rows: list[dict]) -> dict:
    """Rollout, reflection and localization statistics of one round (SPEC §1, "Logged per step")."""
    kept = [r for r in rows if r["in_loss"]]
    wrong = [r for r in kept if r["reward"] == 0.0]
    reflected = [r for r in kept if "parsed" in r]
    found = [r for r in wrong if r.get("quote_char") is not None]
    judged = [r["first_error_hit"] for r in found if r.get("first_error_hit") is not None]
    tokens = sum(len(r["response_ids"]) for r in kept)

    def rate(values):
        return mean(values) if values else None

    return {
        "n_rollouts": len(rows),
        "rollout_accuracy": rate([r["reward"] for r in rows]),
        "kept_group_frac": rate([r["in_loss"] for r in rows]),
        "reflection_parse_rate": rate([float(r["parsed"]) for r in reflected]),
        "quote_found_rate": rate([float(r.get("quote_char") is not None) for r in wrong]) if reflected else None,
        "quote_start_frac": rate([r["quote_char"] / max(len(r["response"]), 1) for r in found]),
        "loss_token_frac": (sum(len(r["response_ids"]) - r["loss_start"] for r in kept if r["distilled"]) / tokens) if tokens else None,
        "first_error_hit_rate": rate([float(h) for h in judged]),
        # the per-sample mask: rollouts of kept groups whose teacher had no context (ref: no loss)
        "rows_without_teacher_signal": sum(not r["distilled"] for r in kept),
        "reflection_prompts_cut": sum(bool(r.get("reflection_prompt_tokens_cut")) for r in kept),
        "teacher_prompts_cut": sum(bool(r.get("teacher_prompt_cut")) for r in kept),
        # how many found quotes start this many lines from the true first error (world tasks)
        "quote_line_offsets": dict(sorted(Counter(
            r["quote_line_offset"] for r in found if r.get("quote_line_offset") is not None).items())),
    }


def run_distill(*, model: str, reflections: str, teacher_scores: str, out_model: str, out_metrics: str, settings: dict) -> None:
    started = time.time()
    torch.manual_seed(settings["seed"] * 100_003 + settings["round"])
    method, train = settings["method"], settings["train"]
    rows = read_jsonl(reflections)
    if method["objective"] == "grpo":
        group_advantages([r for r in rows if r["in_loss"]])
    # The teacher stage scored the distilled rows, in file order.
    scored = iter(torch.load(teacher_scores, weights_only=True)["targets"])
    targets = [next(scored) if r["distilled"] and method["objective"] == "distill" else None for r in rows]
    if problem := unsupported(method, train):
        raise SystemExit(problem)
    tokenizer = load_tokenizer(model)
    if train.get("launcher", "none") == "accelerate":
        from rosd.sharding import Sharded

        runtime = Sharded(model, train, method, device=settings["device"], dtype=settings["dtype"])
        student, optimizer, global_step = runtime.student, runtime.optimizer, runtime.resume(model)
    else:
        student = load_student(model, train, device=settings["device"])
        optimizer, global_step = optimizer_for(student, train, Path(model))
        ema = None
        if method.get("teacher") == "ema":
            previous = Path(model) / EMA_TEACHER
            ema = load_model(str(previous) if previous.exists() else model, device=settings["device"]).eval()
        runtime = SingleProcess(student, device=settings["device"], dtype=settings["dtype"], ema=ema)
    settings = dict(settings, pad_id=tokenizer.pad_token_id)
    steps = []
    total, steps_started = train["steps_per_round"], time.time()
    for step in range(total):
        index = [i for i, r in enumerate(rows) if r["step"] == step]
        step_rows, step_targets = [rows[i] for i in index], [targets[i] for i in index]
        if not any(r["distilled"] for r in step_rows):
            log.info("step %d: no rollout with loss (all groups filtered): AdamW steps on a zero gradient", step)
        if method["objective"] == "grpo":
            record_old_logps(runtime, step_rows, settings=settings)
        for update_rows, update_targets in step_updates(step_rows, step_targets, method):
            result = train_step(student, optimizer, update_rows, update_targets, settings=settings, global_step=global_step, runtime=runtime)
            global_step += 1
            steps.append(result)
            if runtime.ema is not None:
                runtime.update_ema(method["ema_rate"])
            rate = (step + 1) / max(time.time() - steps_started, 1e-9)  # steps/s, for the ETA of the round
            log.info(
                "step %d/%d (global %d): loss %.4f grad_norm %.3f lr %.2e (%.2f steps/s, ETA %.0fs)",
                step + 1, total, global_step, result["loss"], result["grad_norm"], result["lr"], rate, (total - step - 1) / rate,
            )
    # Under several processes every one takes part in writing the checkpoint; the main one ends it.
    runtime.write_checkpoint(out_model, tokenizer, optimizer, global_step)
    if not runtime.is_main:
        return None
    metrics = {
        "method": settings["method_name"], "target": settings["target"], "seed": settings["seed"], "round": settings["round"],
        "step": global_step,
        "loss": mean(s["loss"] for s in steps) if steps else None,
        "grad_norm": mean(s["grad_norm"] for s in steps) if steps else None,
        "optimizer_steps": len(steps),
        **round_stats(rows),
    }
    # No wall-clock time in the metrics: the same seed gives the same file (the rule's benchmark
    # file records the job's seconds).
    write_json(out_metrics, metrics)
    log.info("round %d done in %.1fs: %s", settings["round"], time.time() - started, metrics)
