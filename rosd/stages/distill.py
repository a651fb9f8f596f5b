"""Distillation (SPEC §1.8-1.9): round r's optimizer steps, checkpoint r-1 -> checkpoint r.

The checkpoint carries the AdamW moments and the global step, so rounds resume one optimizer
(restarting AdamW each round would make every round's first step a sign step).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from statistics import mean

import torch

from rosd.io import atomic_dir, read_jsonl, write_json
from rosd.losses import add_tail, generalized_jsd, importance_weights, masked_token_mean
from rosd.modeling import load_model, load_tokenizer
from rosd.scoring import batches, response_logps

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.pt"


def _pad(tensors: list[torch.Tensor], length: int) -> torch.Tensor:
    out = torch.zeros((len(tensors), length) + tuple(tensors[0].shape[1:]), dtype=tensors[0].dtype)
    for b, t in enumerate(tensors):
        out[b, : len(t)] = t
    return out


def micro_batch_terms(model, rows, targets, *, loss: dict, temperature: float, is_clip, pad_id: int):
    """Per-token divergence, token weights and loss mask of one micro-batch, each ``[B, T]``."""
    responses = [r["response_ids"] for r in rows]
    logp, mask = response_logps(model, [r["prompt_ids"] for r in rows], responses, temperature=temperature, pad_id=pad_id)
    length = logp.shape[1]
    teacher = _pad([t["teacher_logp"] for t in targets], length).to(logp.device)
    if loss["support"] == "topk_tail":
        support = _pad([t["support"].long() for t in targets], length).to(logp.device)
        student = add_tail(logp.gather(-1, support))
    else:
        student = logp
    per_token = generalized_jsd(student, teacher, loss["alpha"])
    sampled = _pad([torch.tensor(r) for r in responses], length).to(logp.device)
    train_logp = logp.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)
    sampler_logp = _pad([torch.tensor(r["sampler_logps"]) for r in rows], length).to(logp.device)
    weights = importance_weights(train_logp, sampler_logp, is_clip)
    positions = torch.arange(length, device=logp.device).unsqueeze(0)
    starts = torch.tensor([r["loss_start"] for r in rows], device=logp.device).unsqueeze(1)
    return per_token, weights, mask * (positions >= starts)


def optimizer_for(model, train: dict, state_dir: Path):
    optimizer = torch.optim.AdamW(model.parameters(), lr=train["lr"], weight_decay=train["weight_decay"])
    state_file = state_dir / TRAINER_STATE
    if state_file.exists():
        state = torch.load(state_file, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        return optimizer, int(state["global_step"])
    return optimizer, 0


def train_step(model, optimizer, rows, targets, *, settings: dict, global_step: int) -> dict:
    """One optimizer step over the step's rollouts, reduced per micro-batch (ref) or globally."""
    train, loss = settings["train"], settings["method"]["loss"]
    for group in optimizer.param_groups:
        group["lr"] = train["lr"] * min(1.0, (global_step + 1) / train["warmup_steps"]) if train["warmup_steps"] else train["lr"]
    optimizer.zero_grad(set_to_none=True)
    pairs = list(zip(rows, targets))
    chunks = list(batches(pairs, train["micro_batch"]))
    total_tokens = sum(len(r["response_ids"]) - r["loss_start"] for r in rows)
    reported = 0.0
    for chunk in chunks:
        per_token, weights, mask = micro_batch_terms(
            model, [r for r, _ in chunk], [t for _, t in chunk], loss=loss,
            temperature=train["temperature"], is_clip=train["is_clip"], pad_id=settings["pad_id"],
        )
        if train["reduction"] == "micro_batch":
            value = masked_token_mean(per_token, weights, mask) / len(chunks)
        else:
            value = (per_token * weights * mask).sum() / max(total_tokens, 1)
        value.backward()
        reported += value.item()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train["grad_clip"])
    optimizer.step()
    return {"loss": reported, "grad_norm": float(grad_norm), "lr": optimizer.param_groups[0]["lr"]}


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
        "loss_token_frac": (sum(len(r["response_ids"]) - r["loss_start"] for r in kept) / tokens) if tokens else None,
        "first_error_hit_rate": rate([float(h) for h in judged]),
    }


def run_distill(*, model: str, reflections: str, teacher_scores: str, out_model: str, out_metrics: str, settings: dict) -> None:
    started = time.time()
    torch.manual_seed(settings["seed"] * 100_003 + settings["round"])
    rows = read_jsonl(reflections)
    kept = [r for r in rows if r["in_loss"]]
    targets = torch.load(teacher_scores, weights_only=True)["targets"]
    tokenizer = load_tokenizer(model)
    student = load_model(model, device=settings["device"]).train()
    optimizer, global_step = optimizer_for(student, settings["train"], Path(model))
    settings = dict(settings, pad_id=tokenizer.pad_token_id)
    steps = []
    for step in range(settings["train"]["steps_per_round"]):
        index = [i for i, r in enumerate(kept) if r["step"] == step]
        if not index:
            log.info("step %d: no group with mixed rewards, no update", step)
            continue
        result = train_step(student, optimizer, [kept[i] for i in index], [targets[i] for i in index], settings=settings, global_step=global_step)
        global_step += 1
        steps.append(result)
        log.info("step %d/%d (global %d): loss %.4f grad_norm %.3f", step + 1, settings["train"]["steps_per_round"], global_step, result["loss"], result["grad_norm"])
    with atomic_dir(out_model) as tmp:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save({"optimizer": optimizer.state_dict(), "global_step": global_step}, tmp / TRAINER_STATE)
    metrics = {
        "method": settings["method_name"], "target": settings["target"], "seed": settings["seed"], "round": settings["round"],
        "step": global_step,
        "loss": mean(s["loss"] for s in steps) if steps else None,
        "grad_norm": mean(s["grad_norm"] for s in steps) if steps else None,
        "optimizer_steps": len(steps),
        **round_stats(rows),
        "seconds": time.time() - started,
    }
    write_json(out_metrics, metrics)
    log.info("round %d done in %.1fs: %s", settings["round"], metrics["seconds"], metrics)
