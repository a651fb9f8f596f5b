"""Methods as named presets over one pipeline (SPEC §1, "Methods one config switch apart").

A preset fixes what the teacher reads, which tokens carry loss, which weights the teacher has, and
any loss or training settings the method defines; `config.method_overrides.<method>` changes any of
them. `resolve` gives a method's full settings: config's `train` and `loss`, then the preset, then
the user's overrides.
"""

from __future__ import annotations

import copy

_ROSD = {"objective": "distill", "teacher_context": "solution+reflection", "mask": "first_error", "teacher": "frozen"}

PRESETS: dict[str, dict] = {
    # Evaluation only: θ0 as it is.
    "base": {"objective": None},
    "rosd": _ROSD,
    # The paper's framing: the teacher reads only the reflection.
    "rosd_reflection_only": {**_ROSD, "teacher_context": "reflection"},
    # Ablation: reflection in the teacher's prompt, but the whole response distilled.
    "rosd_no_mask": {**_ROSD, "mask": "full"},
    # The reference's "OPSD" baseline: a sibling solution, the whole response, an EMA teacher.
    "sdpo": {"objective": "distill", "teacher_context": "solution", "mask": "full", "teacher": "ema", "ema_rate": 0.05},
    # OPSD (arXiv 2601.18734): the dataset's reference solution, forward KL over the full vocabulary.
    "opsd": {
        "objective": "distill",
        "teacher_context": "reference",
        "mask": "full",
        "teacher": "frozen",
        "loss": {"support": "full", "alpha": 0.0},
    },
    # RL baseline: reward minus the group mean (no std scaling), clipped ratio 0.2/0.28, lr 1e-6,
    # the step's rollouts split into 4 mini-batch updates.
    "grpo": {
        "objective": "grpo",
        "teacher_context": None,
        "mask": "full",
        "teacher": None,
        "train": {"lr": 1.0e-6},
        "grpo": {"clip_low": 0.2, "clip_high": 0.28, "updates_per_batch": 4},
    },
}

METHODS = tuple(PRESETS)


def trains(settings: dict) -> bool:
    return settings["objective"] is not None


def needs_reflection(settings: dict) -> bool:
    return settings["teacher_context"] in ("solution+reflection", "reflection") or settings["mask"] == "first_error"


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
