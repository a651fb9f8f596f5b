"""The Hugging Face hub's offline switch, read the way the hub's own libraries read it.

The `rosd` command turns the hub off unless the caller set these variables (rosd/cli.py): every
model and dataset is then a local file or already in the Hugging Face cache (a model's snapshot, a
dataset `datasets.load_dataset` fetched before), and any other hub name fails at once with one
line saying what to give instead, never after minutes of retries.
"""

from __future__ import annotations

import os

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set to a true value."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in OFFLINE_VARIABLES)


def offline_message(what: str, name: str, instead: str) -> str:
    """One line for a hub name asked for while the hub is off and not in the local cache."""
    return (
        f"{what} {name!r} is a Hugging Face hub name, not in the local cache, and the hub is off "
        "(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE; "
        f"the rosd command sets them unless you do): {instead}, or run with HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 "
        "on a machine with a network"
    )
