"""Mechanism diagnostics of distillation (docs/method.md, "Logged per round"): where on a rollout the
teacher pulls the student, measured at teacher scoring on the round's starting weights. Pure
functions, no model, no I/O; the loss never reads them.

A wrong rollout splits at its true first error (known in the embedded world only): the tokens before
it are valid reasoning, so a teacher that still disagrees with the student there overwrites
reasoning that was right (``prefix``); the tokens from it on are what a first-error mask distills
(``from_error``). A correct rollout's tokens are the third set (``correct``).
"""

from __future__ import annotations

import torch

from rosd.method.losses import generalized_jsd

SETS = ("prefix", "from_error", "correct")
# round metric -> (token set, per-token quantity)
METRICS = {
    "prefix_kl": ("prefix", "kl"),
    "prefix_top1_disagreement": ("prefix", "top1_disagreement"),
    "from_error_kl": ("from_error", "kl"),
    "correct_kl": ("correct", "kl"),
    "correct_top1_disagreement": ("correct", "top1_disagreement"),
}


def support_kl(teacher_logp: torch.Tensor, student_logp: torch.Tensor) -> torch.Tensor:
    """KL(teacher‖student) per token over one support ``[..., S] -> [...]`` (the distilled top-k +
    tail bucket): how far the student sits from the target the loss pulls it to (the generalized
    JSD at α = 0, as the loss computes it)."""
    return generalized_jsd(student_logp, teacher_logp, 0.0)


def top1_disagreement(teacher_top1: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
    """1.0 where the teacher's most likely token (over the full vocabulary) is not the token the
    student sampled, else 0.0: the teacher would have written something else there."""
    return (teacher_top1 != sampled).float()


def token_sets(length: int, correct: bool, first_error_token: int | None) -> dict[str, slice]:
    """The response tokens each set holds: all of a correct rollout's in ``correct``; a wrong
    rollout's before its first error in ``prefix``, from it on in ``from_error``; a wrong rollout
    without a known first error (off the world) in none."""
    if correct:
        return {"correct": slice(0, length)}
    if first_error_token is None:
        return {}
    return {"prefix": slice(0, first_error_token), "from_error": slice(first_error_token, length)}


def row_sums(kl: torch.Tensor, disagreement: torch.Tensor, correct: bool, first_error_token: int | None) -> dict[str, dict]:
    """One row's ``{set: {"kl": Σ, "top1_disagreement": Σ, "tokens": n}}`` over its per-token
    values ``[T]``; sums, not means, so a round weighs every token alike."""
    sets = token_sets(len(kl), correct, first_error_token)
    sums = {}
    for name in SETS:
        part = sets.get(name, slice(0, 0))
        sums[name] = {"kl": float(kl[part].sum()), "top1_disagreement": float(disagreement[part].sum()), "tokens": len(kl[part])}
    return sums


def round_metrics(rows: list[dict | None]) -> dict[str, float | None]:
    """The round's ``METRICS``: per set, the token-weighted mean over the rows' sums (rows that were
    not measured are None); None where the set holds no token."""
    measured = [r for r in rows if r is not None]
    metrics = {}
    for metric, (name, quantity) in METRICS.items():
        tokens = sum(r[name]["tokens"] for r in measured)
        metrics[metric] = sum(r[name][quantity] for r in measured) / tokens if tokens else None
    return metrics
