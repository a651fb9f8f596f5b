"""The distillation loss (SPEC §1.8): pure tensor functions, no model, no I/O.

Shapes: ``[..., S]`` log-probabilities over one support S (top-k + tail, or the full vocabulary);
every function returns one value per position ``[...]``.
"""

from __future__ import annotations

import math

import torch

# Tail mass floor: float32 cannot resolve 1 − Σp below ~1e-7, and log(0) would give -inf and NaN
# gradients when the support holds (numerically) all the mass.
_MIN_TAIL = 1e-7
_LOG_HALF = math.log(0.5)


def add_tail(logp_topk: torch.Tensor) -> torch.Tensor:
    """Append the bucket log(1 − Σ p) of the mass outside the support: ``[..., k] -> [..., k+1]``."""
    total = torch.logsumexp(logp_topk, dim=-1, keepdim=True).clamp(max=math.log1p(-_MIN_TAIL))
    # log(1 − e^x): log(−expm1 x) near 0, log1p(−e^x) far from it. Each branch gets inputs clamped
    # to its own range so the branch torch.where discards cannot put NaN into the gradient.
    near_one = torch.log(-torch.expm1(total.clamp(min=_LOG_HALF)))
    far_from_one = torch.log1p(-torch.exp(total.clamp(max=_LOG_HALF)))
    return torch.cat([logp_topk, torch.where(total > _LOG_HALF, near_one, far_from_one)], dim=-1)


def _kl(p_logp: torch.Tensor, q_logp: torch.Tensor) -> torch.Tensor:
    """KL(P‖Q) over the last dimension; zero-mass entries of P contribute nothing."""
    p = p_logp.exp()
    return torch.where(p > 0, p * (p_logp - q_logp), torch.zeros_like(p)).sum(-1)


def generalized_jsd(student_logp: torch.Tensor, teacher_logp: torch.Tensor, alpha: float) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence per position.

    α=0: KL(teacher‖student); α=1: KL(student‖teacher); otherwise with M = (1−α)·S + α·T,
    (1−α)·KL(S‖M) + α·KL(T‖M).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if alpha == 0.0:
        return _kl(teacher_logp, student_logp)
    if alpha == 1.0:
        return _kl(student_logp, teacher_logp)
    mixture = torch.logsumexp(
        torch.stack([student_logp + math.log(1.0 - alpha), teacher_logp + math.log(alpha)]), dim=0
    )
    return (1.0 - alpha) * _kl(student_logp, mixture) + alpha * _kl(teacher_logp, mixture)


def importance_weights(train_logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float | None) -> torch.Tensor:
    """Truncated importance weight min(exp(logp_train − logp_sampler), cap), without gradient."""
    if cap is None:
        return torch.ones_like(train_logp)
    return torch.exp(train_logp.detach() - sampler_logp).clamp(max=cap)


def masked_token_mean(per_token: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ loss·weight over masked-in tokens, divided by their count (the reference's token mean)."""
    return (per_token * weights * mask).sum() / mask.sum().clamp(min=1)
