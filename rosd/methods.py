"""Methods as named presets over one pipeline (SPEC §1, "Methods one config switch apart").

A preset fixes what the teacher reads, which tokens carry loss, which weights the teacher has and
any loss settings the method defines; `config.method_overrides.<method>` can change any of them.
"""

from __future__ import annotations

import copy

PRESETS: dict[str, dict] = {
    # Evaluation only: θ0 as it is.
    "base": {"train": False},
    "rosd": {
        "train": True,
        "teacher_context": "solution+reflection",
        "mask": "first_error",
        "teacher": "frozen",
    },
    # The reference baseline the SPEC calls OPSD here: the teacher reads a verified solution from
    # the dataset and the whole response is distilled, with its own loss (forward KL, full vocab).
    "opsd": {
        "train": True,
        "teacher_context": "reference",
        "mask": "full",
        "teacher": "frozen",
        "loss": {"support": "full", "alpha": 0.0},
    },
}

TEACHER_CONTEXTS = ("solution+reflection", "reflection", "solution", "reference")


def needs_reflection(settings: dict) -> bool:
    return settings["teacher_context"] in ("solution+reflection", "reflection") or settings["mask"] == "first_error"


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolve(config: dict, method: str) -> dict:
    """The method's full settings: the config's `loss`, then the preset, then the user's overrides."""
    if method not in PRESETS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(PRESETS)}")
    settings = _merge({"loss": config["loss"]}, PRESETS[method])
    return _merge(settings, config.get("method_overrides", {}).get(method, {}))
