"""The training objective of one optimizer step, as pure tensor code: per-token terms of a
micro-batch (distillation divergence or GRPO's clipped policy gradient, with the truncated importance
weight and the first-error mask), how micro-batches are formed and reduced, the warm-up schedule,
and how a batch splits into updates (docs/method.md, "Loss" and "Update")."""

from __future__ import annotations

import torch

from rosd.method.losses import (
    add_tail,
    chunked_over_tokens,
    clipped_policy_gradient,
    generalized_jsd,
    importance_weights,
    masked_token_mean,
    sampled_token_reverse_kl,
)
from rosd.method.scoring import batches, logp_of, response_tokens
from rosd.method.sync_guard import gap_sums


def _flat(rows: list[dict], key: str) -> torch.Tensor:
    return torch.cat([torch.as_tensor(r[key]) for r in rows])


def micro_batch_terms(model, rows, targets, *, settings: dict):
    """Per-token loss, token weights and loss mask of one micro-batch, each flat ``[N]`` over its
    response tokens, and the sampler-trainer gap sums of its sampled tokens (rosd.method.sync_guard);
    the vocabulary projection runs in chunks of ``train.token_chunk`` tokens."""
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
    gap = gap_sums(train_logp, sampler_logp)
    if method["objective"] == "grpo":
        # ref baseline_grpo: the ratio against the step's starting policy, times the truncated
        # importance weight of that policy against the sampler (rollout_is: token, threshold is_clip).
        advantages = torch.cat([torch.full((len(r["response_ids"]),), r["advantage"]) for r in rows]).to(device)
        old_logp = _flat(rows, "old_logps").float().to(device)
        grpo = method["grpo"]
        per_token = clipped_policy_gradient(train_logp, old_logp, advantages, grpo["clip_low"], grpo["clip_high"], grpo["dual_clip"])
        return per_token, importance_weights(old_logp, sampler_logp, train["is_clip"]), mask, gap
    return per_token, importance_weights(train_logp, sampler_logp, train["is_clip"]), mask, gap


def warmup_lr(lr: float, global_step: int, warmup_steps: int) -> float:
    """The learning rate of training step ``global_step`` (0-based): k/warmup_steps of ``lr`` during
    warm-up, so the first step has lr 0 (ref: constant schedule with warm-up), then ``lr``. The
    schedule advances once per training step, not per optimizer update (ref fsdp_workers
    update_actor): all of GRPO's mini-batch updates of step k use step k's lr."""
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


def sampled_logps(model, rows: list[dict], *, settings: dict) -> torch.Tensor:
    """The sampled tokens' log-probs of one micro-batch, flat ``[N]``."""
    train = settings["train"]
    hidden = response_tokens(model, [r["prompt_ids"] for r in rows], [r["response_ids"] for r in rows], pad_id=settings["pad_id"])
    sampled = _flat(rows, "response_ids").to(hidden.device)

    def token_logp(h, start, stop):
        return logp_of(model, h, train["temperature"]).gather(-1, sampled[start:stop, None]).squeeze(-1)

    return chunked_over_tokens(hidden, token_logp, train["token_chunk"])


def step_updates(rows: list[dict], targets: list | None, method: dict):
    """The optimizer updates of one step: the whole batch for distillation; for GRPO, the batch
    split into ``updates_per_batch`` mini-batches, one update each, all at the step's lr
    (``warmup_lr``)."""
    if method["objective"] != "grpo":
        return [(rows, targets)]
    parts = method["grpo"]["updates_per_batch"]
    size = -(-len(rows) // parts)
    return [(rows[i : i + size], None) for i in range(0, len(rows), size)]
