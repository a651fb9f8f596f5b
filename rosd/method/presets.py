"""Methods as named presets over one pipeline (docs/method.md, "Methods").

A preset fixes what the teacher reads, which tokens carry loss, which weights the teacher has, and
any loss or training settings the method defines; `config.method_overrides.<method>` changes any of
them. `resolve` gives a method's full settings: config's `train` and `loss`, then the preset, then
the user's overrides.
"""

from __future__ import annotations

import copy

# The reference's ROSD (its code as it runs): the teacher reads the reflection when one parsed, else
# the sibling solution, else nothing (and that rollout gets no loss); loss from the first error on.
_ROSD = {"objective": "distill", "teacher_context": "reflection_else_solution", "mask": "first_error", "teacher": "frozen"}

PRESETS: dict[str, dict] = {
    # Evaluation only: θ0 as it is.
    "base": {"objective": None},
    "rosd": _ROSD,
    # Ablation: the sibling solution and the reflection together in the teacher's prompt.
    "rosd_solution_and_reflection": {**_ROSD, "teacher_context": "solution_and_reflection"},
    # Ablation: the reflection only, no solution fallback (an unparsed reflection: no loss).
    "rosd_reflection_only": {**_ROSD, "teacher_context": "reflection"},
    # Ablation: rosd's teacher, but the whole response distilled (the mask's own effect).
    "rosd_no_mask": {**_ROSD, "mask": "full"},
    # The reference's own baseline (its "OPSD"): a sibling solution, the whole response, an EMA
    # teacher; a lone correct rollout has no sibling, so it gets no loss.
    "sdpo": {"objective": "distill", "teacher_context": "solution", "mask": "full", "teacher": "ema", "ema_rate": 0.05},
    # OPSD (arXiv 2601.18734) as its code: the dataset's reference solution in its own wording,
    # forward KL over the full vocabulary with a per-entry clip, every rollout distilled whatever
    # its reward, its sampling (T 1.1, top_p 0.95, top_k 20).
    "opsd": {
        "objective": "distill",
        "teacher_context": "reference",
        "mask": "full",
        "teacher": "frozen",
        "loss": {"support": "full", "alpha": 0.0, "entry_clip": 0.05},
        "train": {"temperature": 1.1, "top_p": 0.95, "top_k": 20, "group_filter": "none", "skip_no_success": False},
    },
    # RL baseline as the reference's baseline_grpo.yaml: reward minus the group mean (no std
    # scaling), zero-variance groups kept (zero advantage), clipped ratio 0.2/0.28 with dual clip 3,
    # truncated IS weight, lr 1e-6, 4 mini-batch updates per batch, micro-batches of 8.
    "grpo": {
        "objective": "grpo",
        "teacher_context": None,
        "mask": "full",
        "teacher": None,
        "train": {"lr": 1.0e-6, "micro_batch": 8, "group_filter": "none", "skip_no_success": False},
        "grpo": {"clip_low": 0.2, "clip_high": 0.28, "dual_clip": 3.0, "updates_per_batch": 4},
    },
}

METHODS = tuple(PRESETS)


def trains(settings: dict) -> bool:
    return settings["objective"] is not None


REFLECTION_CONTEXTS = ("reflection_else_solution", "solution_and_reflection", "reflection")


def needs_reflection(settings: dict) -> bool:
    return settings["teacher_context"] in REFLECTION_CONTEXTS or settings["mask"] == "first_error"


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolve(config: dict, method: str) -> dict:
    if method not in PRESETS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(PRESETS)}")
    settings = _merge({"loss": config["loss"], "train": config["train"]}, PRESETS[method])
    return _merge(settings, config.get("method_overrides", {}).get(method, {}))


def unsupported(method: dict, train: dict) -> str | None:
    """Why these settings cannot train (rosd/training/student.py), as one line; None when they can. The
    train keys read here are optional: absent means off. (Torch-free: the Snakefile calls it.)"""
    if method.get("teacher") == "ema" and train.get("lora"):
        return "train.lora cannot train a method with an EMA teacher (sdpo): the EMA averages full weights"
    return None


def evaluation_rounds(rounds: int, steps_per_round: int, every_steps: int | None) -> list[int]:
    """The rounds (1-based) whose checkpoint is evaluated: those ending on a multiple of
    ``every_steps`` optimizer steps, and the last round always (θ0 is evaluated apart)."""
    every = [r for r in range(1, rounds + 1) if every_steps and (r * steps_per_round) % every_steps == 0]
    return sorted(set(every) | {rounds})
