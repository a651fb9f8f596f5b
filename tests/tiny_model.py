"""A small model directory for tests: the shipped θ0 when it is there, else a few-step warm start of
a one-layer world model (same tokenizer and chat template code, a few seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path

THETA0 = Path(__file__).resolve().parent.parent / "rosd" / "world" / "theta0"


def shipped_theta0_exists() -> bool:
    return (THETA0 / "config.json").exists()


def small_model_dir(tmp_path_factory) -> Path:
    if shipped_theta0_exists():
        return THETA0
    from rosd.world.warm_start import run_warm_start

    out = tmp_path_factory.mktemp("theta0") / "model"
    run_warm_start(str(out), seed=0, steps=2, batch_size=4, layers=1, hidden=32, vocab_size=400, log_every=1, warmup=1)
    return out
