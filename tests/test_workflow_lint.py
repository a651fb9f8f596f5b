"""The workflow's own code: Snakemake's linter finds nothing on the default config, also with the paper presets' execution settings, and the
Snakefiles are formatted by snakefmt ([tool.snakefmt] in pyproject.toml). .ci/run runs both too."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pipeline  # every test here starts Snakemake or another process

REPO = Path(__file__).resolve().parent.parent
SNAKEFILES = ["Snakefile", "workflow/rules"]


# The default's per-stage rules; then blocks of rounds and an evaluation job per checkpoint (the paper presets').
@pytest.mark.parametrize("overlay", ["{}", "execution: {rounds_per_job: 1, resident: false, evaluation_jobs: benchmark}"])
def test_snakemake_lint_finds_nothing(tmp_path, overlay):
    # --lint parses the workflow and runs no job; the working directory only keeps .snakemake/ out of the repo
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    (tmp_path / "overlay.yaml").write_text(overlay + "\n")
    configs = ["--configfile", str(REPO / "config" / "config.yaml"), str(tmp_path / "overlay.yaml")]
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--lint", *configs],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert "Lints for" not in output, output[-6000:]
    assert done.returncode == 0, output[-3000:]  # Snakemake exits 1 when it prints any lint


@pytest.mark.skipif(importlib.util.find_spec("snakefmt") is None, reason="snakefmt is not installed: pip install -e '.[test]'")
def test_snakefiles_are_formatted_by_snakefmt():
    done = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "--diff", *SNAKEFILES],  # the config: REPO/pyproject.toml
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"run `snakefmt {' '.join(SNAKEFILES)}`:\n{done.stdout[-4000:]}{done.stderr[-2000:]}"
