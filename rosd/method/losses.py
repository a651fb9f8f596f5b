"""The distillation loss (docs/method.md, "Loss"): pure tensor functions, no model, no I/O.

Shapes: ``[..., S]`` log-probabilities over one support S (top-k + tail, or the full vocabulary);
every function returns one value per position ``[...]``.
"""

from __future__ import annotations

import math

import torch
import torch.utils.checkpoint

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


def _kl(p_logp: torch.Tensor, q_logp: torch.Tensor, entry_clip: float | None) -> torch.Tensor:
    """KL(P‖Q) over the last dimension; zero-mass entries of P contribute nothing, and each entry's
    term p·(log p − log q) is capped at ``entry_clip`` when one is given."""
    p = p_logp.exp()
    terms = torch.where(p > 0, p * (p_logp - q_logp), torch.zeros_like(p))
    if entry_clip is not None:
        terms = terms.clamp(max=entry_clip)
    return terms.sum(-1)


def generalized_jsd(
    student_logp: torch.Tensor, teacher_logp: torch.Tensor, alpha: float, entry_clip: float | None = None
) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence per position.

    α=0: KL(teacher‖student); α=1: KL(student‖teacher); otherwise with M = (1−α)·S + α·T,
    (1−α)·KL(S‖M) + α·KL(T‖M).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if alpha == 0.0:
        return _kl(teacher_logp, student_logp, entry_clip)
    if alpha == 1.0:
        return _kl(student_logp, teacher_logp, entry_clip)
    mixture = torch.logsumexp(
        torch.stack([student_logp + math.log(1.0 - alpha), teacher_logp + math.log(alpha)]), dim=0
    )
    return (1.0 - alpha) * _kl(student_logp, mixture, entry_clip) + alpha * _kl(teacher_logp, mixture, entry_clip)


def sampled_token_reverse_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """The reverse-KL estimator on the sampled token: (log S(y) − log T(y)) as a detached reward on
    log S(y), whose gradient is an unbiased estimate of ∇KL(S‖T) for y ~ S. Inputs ``[...]``."""
    return (student_logp - teacher_logp).detach() * student_logp


def clipped_policy_gradient(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None = None,
) -> torch.Tensor:
    """Per-token PPO/GRPO surrogate max(−r·A, −clip(r, 1−low, 1+high)·A), r = exp(logp − old) with
    the log-ratio bounded to ±20 (ref); with ``dual_clip`` c, tokens with A < 0 are capped at −c·A."""
    ratio = torch.exp((logp - old_logp).clamp(-20.0, 20.0))
    clipped = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high))
    if dual_clip is None:
        return clipped
    return torch.where(advantages < 0, torch.minimum(clipped, -advantages * dual_clip), clipped)


def importance_weights(train_logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float | None) -> torch.Tensor:
    """Truncated importance weight min(exp(logp_train − logp_sampler), cap), without gradient."""
    if cap is None:
        return torch.ones_like(train_logp)
    # The log-ratio is bounded first, as the reference does, so exp cannot overflow.
    return torch.exp((train_logp.detach() - sampler_logp).clamp(-20.0, 20.0)).clamp(max=cap)


def masked_token_mean(per_token: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ loss·weight over masked-in tokens, divided by their count (the reference's token mean)."""
    return (per_token * weights * mask).sum() / mask.sum().clamp(min=1)


def chunked_over_tokens(hidden: torch.Tensor, token_fn, chunk_size: int) -> torch.Tensor:
    """``token_fn(hidden[a:b], a, b)`` for consecutive chunks of tokens, concatenated.

    ``token_fn`` projects a chunk onto the vocabulary and reduces it to per-token values, so at most
    one chunk's [chunk × vocabulary] tensors exist at a time. With gradients each chunk is
    checkpointed: its vocabulary-sized intermediates are recomputed in backward, not kept.
    """
    outputs = []
    for start in range(0, hidden.shape[0], chunk_size):
        stop = min(start + chunk_size, hidden.shape[0])
        if torch.is_grad_enabled() and hidden.requires_grad:
            outputs.append(
                torch.utils.checkpoint.checkpoint(token_fn, hidden[start:stop], start, stop, use_reentrant=False)
            )
        else:
            outputs.append(token_fn(hidden[start:stop], start, stop))
    return torch.cat(outputs)
