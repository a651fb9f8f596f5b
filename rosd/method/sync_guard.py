"""The weight-sync guard (docs/method.md, "Sampler-trainer gap"): did the generation engine sample
from the weights the trainer starts the round with?

On the sampled tokens of a round's first optimizer update, before it changes any weight, the trainer
recomputes each token's log-prob; Δ = logp_trainer − logp_sampler is float noise when both used the
same weights, and large when the engine generated from stale ones (weights not pushed, a stale prefix
cache). A round records mean |Δ|, max |Δ| and the mean importance weight exp(Δ); the distill stage
warns, or stops, when mean |Δ| passes ``train.sampler_gap_limit``.
"""

from __future__ import annotations

import math

import torch

# The log-ratio is bounded before exp, as the importance weight bounds it (rosd.method.losses).
_LOG_RATIO_BOUND = 20.0


def gap_sums(train_logp: torch.Tensor, sampler_logp: torch.Tensor) -> tuple[float, float, float, int]:
    """(Σ|Δ|, max|Δ|, Σ exp(Δ), token count) of one micro-batch's sampled tokens; sums, so that
    micro-batches (and processes) add up before ``summary`` divides."""
    delta = train_logp.detach().float() - sampler_logp.float()
    if delta.numel() == 0:
        return 0.0, 0.0, 0.0, 0
    ratio = delta.clamp(-_LOG_RATIO_BOUND, _LOG_RATIO_BOUND).exp()
    return float(delta.abs().sum()), float(delta.abs().max()), float(ratio.sum()), int(delta.numel())


def summary(sum_abs: float, max_abs: float, sum_ratio: float, count: int) -> dict:
    """The round's guard columns; None where no token was compared (no rollout carried loss)."""
    if not count:
        return {"sampler_gap_mean": None, "sampler_gap_max": None, "sampler_ratio_mean": None}
    return {"sampler_gap_mean": sum_abs / count, "sampler_gap_max": max_abs, "sampler_ratio_mean": sum_ratio / count}


def verdict(columns: dict, limit: float | None) -> str | None:
    """One line when the round's mean |Δ| passes ``limit`` (None: never), else None."""
    gap = columns["sampler_gap_mean"]
    if limit is None or gap is None or not (math.isnan(gap) or gap > limit):
        return None
    return (
        f"the sampler's log-probs differ from the trainer's by {gap:.3g} nats per token on average "
        f"(max {columns['sampler_gap_max']:.3g}, mean importance weight {columns['sampler_ratio_mean']:.3g}; "
        f"limit train.sampler_gap_limit={limit}): the rollouts were not sampled from the weights being trained"
    )
