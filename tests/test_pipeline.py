"""Real Snakemake runs of the whole DAG on a shrunken config (tests/configs/tiny.yaml)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "configs" / "tiny.yaml"
EXP = Path("results") / "tiny"


def snakemake_command(workdir: Path, *args: str, configs=()) -> list[str]:
    configfiles = [str(TINY), *map(str, configs)]
    return [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--cores", "2", "--configfile", *configfiles, *args,
    ]


def environment() -> dict:
    # The rules call the `rosd` command installed beside this Python.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def run(workdir: Path, *args: str, configs=(), check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        snakemake_command(workdir, *args, configs=configs), env=environment(), capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def planned_jobs(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> count."""
    table = dry_run_output.split("Job stats:")[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE) if m.group(1) != "total"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("pipeline")
    run(workdir)
    return workdir


def test_whole_dag_produces_tables_metrics_and_mlflow_runs(finished):
    exp = finished / EXP
    table = pd.read_csv(exp / "tables" / "comparison.csv")
    assert set(table["method"]) == {"base", "opsd", "rosd"}
    assert "math (ID)" in (exp / "tables" / "comparison.md").read_text()
    for method in ("opsd", "rosd"):
        for round_index in (1, 2):
            run_dir = exp / "runs" / method / "math" / "seed0" / f"round{round_index}"
            assert (run_dir / "checkpoint" / "trainer_state.pt").exists()
            metrics = pd.read_json(run_dir / "metrics.json", typ="series")
            for key in ("reflection_parse_rate", "quote_found_rate", "quote_start_frac", "loss_token_frac", "first_error_hit_rate"):
                assert key in metrics
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{exp / 'mlflow.db'}")
    parents = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.level = 'seed'")
    assert len(parents) == 3


def test_second_run_has_nothing_to_do(finished):
    result = run(finished, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_evaluation_change_reruns_only_evaluation_and_what_follows(finished, tmp_path):
    overlay = tmp_path / "more_samples.yaml"
    overlay.write_text("evaluation: {samples: 3}\n")
    jobs = planned_jobs(run(finished, "-n", configs=[overlay]).stdout)
    assert jobs.get("evaluate", 0) > 0
    assert set(jobs) <= {"evaluate", "aggregate", "plots", "track", "all"}


def test_invalid_config_stops_before_any_job_with_one_line(tmp_path):
    overlay = tmp_path / "bad.yaml"
    overlay.write_text("train: {lr: -1}\n")
    result = run(tmp_path, configs=[overlay], check=False)
    assert result.returncode != 0
    assert "config error: train.lr = -1: must be a number > 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


def _distill_process(workdir: Path) -> int | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if b"distill" in cmdline and any(part.endswith(b"rosd") for part in cmdline) and Path(cwd) == workdir:
            return int(proc.name)
    return None


def _mtimes(root: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "logs" not in p.parts and ".partial" not in str(p)}


@pytest.mark.skipif(not Path("/proc").exists(), reason="finds the distillation process through /proc")
def test_killed_distillation_job_resumes_and_ends_with_the_same_tables(finished, tmp_path):
    process = subprocess.Popen(snakemake_command(tmp_path), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, victim = time.time() + 600, None
    while victim is None and time.time() < deadline and process.poll() is None:
        victim = _distill_process(tmp_path)
        time.sleep(0.05)
    assert victim is not None, "no distillation job started"
    os.kill(victim, signal.SIGKILL)
    assert process.wait(timeout=600) != 0
    before = _mtimes(tmp_path / EXP)
    assert any(p.name == "teacher.pt" for p in before)

    run(tmp_path)  # started again, the same command

    after = _mtimes(tmp_path / EXP)
    reused = [p for p in before if after.get(p) == before[p]]
    assert len(reused) == len(before), "a finished stage was run again"
    for table in ("comparison.csv", "evals.csv"):
        assert (tmp_path / EXP / "tables" / table).read_text() == (finished / EXP / "tables" / table).read_text()
