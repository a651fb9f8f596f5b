"""The GPU benchmark's --smoke mode runs here (CPU, tiny shapes): the script's code paths through
rosd's engine, teacher scoring and train step are checked; its numbers mean nothing here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_throughput_smoke_writes_every_phase(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_throughput.py"), "--smoke", "--device", "cpu"],
        env=dict(os.environ, OUT=str(tmp_path)), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_throughput.json").read_text())
    for phase in ("rollouts", "teacher_scoring", "training"):
        assert report[phase]["tokens_per_s"] > 0, phase
    assert report["rollouts"]["generated_tokens"] > 0 and report["training"]["model_flops"] > 0
    assert "training" in done.stdout and "tokens/s" in done.stdout
