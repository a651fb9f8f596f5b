"""The benchmarks' scripts run here on small shapes, so their code paths are checked; their numbers
mean nothing here. The GPU check's --smoke mode runs rosd's engine, teacher scoring and train step
(gpu_throughput.py), and times two stages of the tiny config's round and its second round fused and
resident (round_cost.py), on the CPU; the paper-DAG benchmark plans a matrix capped at two rounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pipeline  # every test here starts Snakemake or another process

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_smoke_runs_the_throughput_and_round_cost_benchmarks(tmp_path):
    """benchmarks/gpu_check.sh --smoke, on CUDA where there is a GPU: gpu_throughput.py's phases and
    weight push, and round_cost.py on two stages (one without a model, the trainer) and two rounds."""
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--smoke"],
        env=dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable), capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    throughput = json.loads((tmp_path / "gpu_throughput.json").read_text())
    for phase in ("rollouts", "teacher_scoring", "training"):
        assert throughput[phase]["tokens_per_s"] > 0, phase
    assert throughput["rollouts"]["generated_tokens"] > 0 and throughput["training"]["model_flops"] > 0
    assert "training" in done.stdout and "tokens/s" in done.stdout
    assert throughput["weight_push"]["exact"] is True and throughput["weight_push"]["seconds"] > 0  # the resident path's push

    report = json.loads((tmp_path / "round_cost.json").read_text())
    assert set(report["stages"]) == {"grade", "distill"}
    for stage in report["stages"].values():
        assert stage["pipeline_s"] > 0 and stage["fused_s"] > 0
        assert set(stage["phases_s"]) == {"start", "imports", "stage", "exit"}
    assert report["round_pipeline_s"] == pytest.approx(sum(s["pipeline_s"] for s in report["stages"].values()), abs=0.01)
    assert report["ratio"] == pytest.approx(report["round_pipeline_s"] / report["round_fused_s"], rel=0.01)
    assert len(report["fused_rounds_s"]) == len(report["resident_rounds_s"]) == 2
    assert report["resident_ratio"] == pytest.approx(report["resident_rounds_s"][1] / report["fused_rounds_s"][1], rel=0.01)
    assert report["engine_start_s"] > 0 and report["push_s"] > 0


def _paper_dag(tmp_path, *args: str) -> dict:
    out = tmp_path / "dag.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "paper_dag.py"), "--seeds", "1", *args, "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())["jobs"]


def test_paper_dag_plans_blocks_of_rounds_and_an_evaluation_job_per_checkpoint(tmp_path):
    jobs = _paper_dag(tmp_path, "--rounds", "12")
    # 6 trained methods x 5 targets, each 12 rounds evaluated at 10 and 12: blocks 1-10 and 11-12
    assert jobs["round_block"] == 60 and jobs["keep_checkpoint"] == 60
    assert jobs["evaluate_checkpoint"] == 1 + 60  # θ0 once, then each evaluated checkpoint on all 6 benchmarks
    assert "distill" not in jobs and "evaluate" not in jobs


def test_paper_dag_plans_the_per_stage_matrix(tmp_path):
    jobs = _paper_dag(tmp_path, "--rounds", "2", "--per-stage")
    # 6 trained methods x 5 targets x 2 rounds; each run evaluates its last round on 6 benchmarks
    assert jobs["distill"] == 60 and jobs["rollouts"] == 60
    assert jobs["evaluate"] == 6 + 6 * 5 * 6
