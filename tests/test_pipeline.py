"""Real Snakemake runs of the whole DAG on a shrunken config (tests/configs/tiny.yaml); the
uninterrupted run is the session's `finished` fixture (tests/conftest.py)."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from pipeline_run import (
    EXP,
    environment,
    planned_jobs,
    processes_in,
    run,
    snakemake_command,
)

pytestmark = pytest.mark.pipeline  # every test here starts Snakemake or another process

MECHANISM = ["prefix_kl", "prefix_top1_disagreement", "from_error_kl", "correct_kl", "correct_top1_disagreement",
             "loss_token_frac_wrong", "loss_token_frac_correct", "path_entropy", "reference_path_share", "sibling_path_share"]


def test_whole_dag_produces_tables_metrics_and_mlflow_runs(finished):
    exp = finished / EXP
    table = pd.read_csv(exp / "tables" / "comparison.csv")
    assert set(table["method"]) == {"base", "opsd", "rosd"}
    assert "math (ID)" in (exp / "tables" / "comparison.md").read_text()
    for method in ("opsd", "rosd"):
        for round_index in (1, 2):
            run_dir = exp / "runs" / method / "math" / "seed0" / f"round{round_index}"
            metrics = pd.read_json(run_dir / "metrics.json", typ="series")
            for key in ("reflection_parse_rate", "quote_found_rate", "quote_start_frac", "loss_token_frac", "first_error_hit_rate"):
                assert key in metrics
    # the mechanism metrics reach the rounds table (docs/method.md, "Logged per round")
    rounds = pd.read_csv(exp / "tables" / "rounds.csv")
    assert set(MECHANISM) <= set(rounds.columns)
    rosd = rounds[rounds["method"] == "rosd"]
    assert rosd["path_entropy"].notna().any() and rosd["loss_token_frac_wrong"].notna().any()
    assert rounds.loc[rounds["method"] == "opsd", "correct_kl"].isna().all()  # full-vocabulary support: not measured
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{exp / 'mlflow.db'}")
    parents = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.level = 'seed'")
    assert len(parents) == 3
    # and MLflow: rosd's parent run holds the mechanism metrics as train/<metric> series
    rosd_parent = parents[parents["tags.method"] == "rosd"].iloc[0]
    history = mlflow.tracking.MlflowClient().get_metric_history(rosd_parent["run_id"], "train/loss_token_frac_wrong")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == rosd.sort_values("round")["loss_token_frac_wrong"].dropna().tolist()


def test_a_run_keeps_theta0_the_evaluated_weights_and_its_newest_checkpoint(finished):
    """Round checkpoints are temporary (rosd/training/checkpoints.py). Every round is evaluated here
    (tiny.yaml: `evaluation.every_steps: 1`): round 1 keeps its weights alone, the last round its
    whole checkpoint (to resume), and θ0 is links to the shipped model, not a copy."""
    exp = finished / EXP
    runs = [f"runs/{m}/math/seed0" for m in ("opsd", "rosd")]
    expected = {"models/theta0": False}
    expected.update({f"{r}/round1/model": False for r in runs} | {f"{r}/round2/model": True for r in runs})
    assert _kept_models(exp) == expected
    assert all(p.is_symlink() for p in (exp / "models" / "theta0").iterdir() if not p.name.startswith("."))


def test_second_run_has_nothing_to_do(finished):
    result = run(finished, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_a_failed_aggregate_keeps_the_previous_tables(finished, tmp_path):
    """One corrupted round metrics file: aggregate fails in one line naming it, and every table of
    the finished run is still there, byte for byte (Snakemake restores its update() outputs)."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(finished, copy, symlinks=True)
    metrics = sorted((copy / EXP / "runs").rglob("metrics.json"))[0]
    metrics.write_text('{"loss": 0.1,')  # truncated, and newer than the tables: aggregate reruns
    result = run(copy, check=False)
    assert result.returncode != 0
    assert f"rosd aggregate: error: {metrics.relative_to(copy)}:1: not valid JSON" in result.stderr
    for table in sorted((finished / EXP / "tables").glob("*")):
        assert (copy / EXP / "tables" / table.name).read_bytes() == table.read_bytes(), table.name


def test_evaluation_change_reruns_only_evaluation_and_what_follows(finished, tmp_path):
    overlay = tmp_path / "more_samples.yaml"
    overlay.write_text("evaluation: {samples: 3}\n")
    jobs = planned_jobs(run(finished, "-n", configs=[overlay]).stdout)
    assert jobs.get("evaluate", 0) > 0
    assert set(jobs) <= {"evaluate", "aggregate", "plots", "track", "all"}


def test_reflection_change_reruns_rosd_from_its_reflections_on(finished, tmp_path):
    """A reflection setting is read by rosd's reflect jobs only: round 1 reruns from reflect on,
    round 2 (whose checkpoint changes) from its rollouts; opsd, θ0 and the data stay."""
    overlay = tmp_path / "warmer_reflections.yaml"
    overlay.write_text("reflection: {temperature: 0.9}\n")
    planned = run(finished, "-n", configs=[overlay]).stdout
    jobs = planned_jobs(planned)
    assert {rule: jobs.get(rule, 0) for rule in ("reflect", "teacher_score", "distill", "rollouts", "grade")} == {
        "reflect": 2, "teacher_score": 2, "distill": 2, "rollouts": 1, "grade": 1,
    }  # fmt: skip
    assert "prepare_data" not in jobs and "init_model" not in jobs
    assert "method=opsd" not in planned and "method=base" not in planned


def test_invalid_config_stops_before_any_job_with_one_line(tmp_path):
    overlay = tmp_path / "bad.yaml"
    overlay.write_text("train: {lr: -1}\n")
    result = run(tmp_path, configs=[overlay], check=False)
    assert result.returncode != 0
    assert "config error: train.lr = -1: must be a number > 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


def _stage_processes(workdir: Path, stages) -> dict[str, int]:
    """Running `rosd <stage>` jobs of this run: stage -> a pid."""
    found = {}
    for pid, cmdline in processes_in(workdir).items():
        if any(part.endswith(b"rosd") for part in cmdline):
            for stage in stages:
                if stage.encode() in cmdline:
                    found[stage] = pid
    return found


def _mtimes(root: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "logs" not in p.parts and ".partial" not in str(p)}


def _incomplete_outputs(workdir: Path) -> list[Path]:
    """The outputs Snakemake marks incomplete (jobs it started and never saw finish): their names
    are urlsafe-base64 under .snakemake/incomplete/, split into '@'-prefixed parts when long."""
    root = workdir / ".snakemake" / "incomplete"
    marks = [p.relative_to(root) for p in root.rglob("*") if p.is_file()] if root.exists() else []
    return [workdir / base64.urlsafe_b64decode("".join(part.lstrip("@") for part in mark.parts)).decode() for mark in marks]


STAGES = ("rollouts", "grade", "reflect", "teacher-score", "distill", "evaluate", "aggregate", "plots", "track")
TABLES = ("comparison.csv", "comparison.md", "intervals.csv", "paired.csv", "evals.csv", "rounds.csv", "localization.csv")


def _run_and_kill(workdir: Path, stages, *args: str, kill_snakemake: bool = False) -> tuple[subprocess.Popen, list[str]]:
    """Start the pipeline and SIGKILL the first job of each of ``stages`` that starts (with
    ``kill_snakemake``, Snakemake itself once one does). Returns the finished process and the
    stages killed."""
    process = subprocess.Popen(snakemake_command(workdir, *args), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, killed = time.time() + 600, []
    while time.time() < deadline and process.poll() is None:
        for stage, pid in _stage_processes(workdir, [s for s in stages if s not in killed]).items():
            killed.append(stage)
            if kill_snakemake:
                process.kill()
                break
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    process.wait(timeout=600)
    return process, killed


RESULTS = EXP.parent
# Left out of the byte comparison of two runs, each for what legitimately differs between them:
#   logs/        job logs and the stage worker's log: timestamps, process ids, durations
#   benchmarks/  Snakemake's per-job benchmark files: seconds and memory measured while the job ran
#   mlflow.db    MLflow's store: random run ids and wall-clock start and end times
#   mlartifacts/ MLflow's artifacts, in folders named by those run ids (their contents repeat the
#                run's files, which are compared themselves)
EXCLUDED_DIRS = {"logs", "benchmarks", "mlartifacts"}
EXCLUDED_FILES = {"mlflow.db"}


def _compared_files(results: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(results)): path.read_bytes()
        for path in sorted(results.rglob("*"))
        if path.is_file() and path.name not in EXCLUDED_FILES and not EXCLUDED_DIRS & set(path.relative_to(results).parts)
    }


def _kept_models(exp: Path) -> dict[str, bool]:
    """Every model directory a run left (θ0, checkpoints, kept models): path -> holds trainer state."""
    dirs = [p.parent for p in exp.rglob("config.json")]
    return {str(d.relative_to(exp)): (d / "trainer_state.pt").exists() for d in dirs}


@pytest.mark.skipif(not Path("/proc").exists(), reason="finds the stage processes through /proc")
def test_killed_snakemake_and_every_killed_stage_resume_to_identical_tables(finished, tmp_path):
    """The fault suite, in one run: SIGKILL Snakemake itself while a distillation job runs (its job
    must die with it: no orphan), recover as the README says (`--unlock`, run again, with
    `--rerun-incomplete`); then SIGKILL one job of every stage in turn, running again after each.
    No finished file is ever rewritten, and every file under results/ ends byte-identical to an
    uninterrupted run's (the same seed gives the same bytes), but for what legitimately differs
    between two runs (`_compared_files`)."""
    exp = tmp_path / EXP
    _, killed = _run_and_kill(tmp_path, ("distill",), kill_snakemake=True)
    assert killed == ["distill"], "no distillation job started"
    deadline = time.time() + 30
    while processes_in(tmp_path) and time.time() < deadline:
        time.sleep(0.2)
    assert not _stage_processes(tmp_path, ("distill",)), "the distillation job outlived its Snakemake"
    assert not processes_in(tmp_path), "a job or a worker's fork outlived its Snakemake"
    # A job that published its output just before Snakemake died is marked incomplete, and
    # --rerun-incomplete runs it again: only what Snakemake recorded as finished must stay.
    incomplete = _incomplete_outputs(tmp_path)
    finished_files = {p: t for p, t in _mtimes(exp).items() if not any(p == o or o in p.parents for o in incomplete)}
    assert any(p.name == "teacher.pt" for p in finished_files)
    run(tmp_path, "--unlock")

    remaining = list(STAGES)
    for _ in range(len(STAGES) + 1):
        # --keep-going: the jobs not downstream of a killed one go on, so one run kills a job of
        # every remaining stage it starts (each stage's first job dies before it can finish).
        process, killed = _run_and_kill(tmp_path, remaining, "--rerun-incomplete", "--keep-going")
        now = _mtimes(exp)
        rewritten = [str(p) for p, t in finished_files.items() if p in now and now[p] != t]
        assert not rewritten, f"finished files written again: {rewritten[:5]}"
        # Only a temporary checkpoint may go, once the next round has read it.
        vanished = [str(p) for p in finished_files if p not in now and "checkpoint" not in p.relative_to(exp).parts]
        assert not vanished, f"finished files removed: {vanished[:5]}"
        # The MLflow store is not a stage output: the track rule updates it, idempotently.
        finished_files = {p: t for p, t in now.items() if not p.name.startswith("mlflow.db") and "mlartifacts" not in p.parts}
        if not killed:
            assert process.returncode == 0
            break
        assert process.returncode != 0, f"killing {killed} did not fail its run"
        remaining = [s for s in remaining if s not in killed]
    assert not remaining, f"stages never killed: {remaining}"
    for table in TABLES:
        assert (exp / "tables" / table).read_bytes() == (finished / EXP / "tables" / table).read_bytes(), table
    # The kills left no checkpoint behind that the uninterrupted run removed.
    assert _kept_models(exp) == _kept_models(finished / EXP)
    # Not only the tables: the same config and seed give the same bytes in every file under results/,
    # teacher targets, kept models, evaluations and plots included, however often the run was killed.
    first, second = _compared_files(finished / RESULTS), _compared_files(tmp_path / RESULTS)
    assert sorted(first) == sorted(second)
    assert any(name.endswith("teacher.pt") for name in first)  # the file torch.save once made differ
    assert [name for name in first if first[name] != second[name]] == []
