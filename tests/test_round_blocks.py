"""Blocks of rounds as one job (`execution.rounds_per_job`, rosd/jobs/blocks.py) and one evaluation job
per checkpoint (`execution.evaluation_jobs: checkpoint`): the same bytes as the per-stage jobs of
the session's `finished` run (tests/conftest.py), a killed block resuming in the stage it was in,
and a changed setting rerunning only the stages it reaches."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from pipeline_run import (
    EXP,
    environment,
    planned_jobs,
    processes_in,
    run,
    snakemake_command,
)

from rosd.jobs.planning import round_blocks
from rosd.stages.resident import IN_MEMORY

pytestmark = pytest.mark.pipeline  # every test here starts Snakemake or another process


def test_blocks_end_at_every_evaluated_round_and_hold_at_most_n_rounds():
    assert round_blocks(25, [10, 20, 25], 10) == [(1, 10), (11, 20), (21, 25)]
    assert round_blocks(7, [3, 7], 2) == [(1, 2), (3, 3), (4, 5), (6, 7)]
    assert round_blocks(3, [3], 1) == [(1, 1), (2, 2), (3, 3)]
    assert round_blocks(4, [4], 10) == [(1, 4)]


ROUND_FILES = ("rollouts.jsonl", "graded.jsonl", "reflections.jsonl", "teacher.pt", "metrics.json")


def _block_client(workdir: Path, run_dir: str) -> int | None:
    """The pid of the `rosd run-rounds` job of the run in ``run_dir``, if it runs."""
    for pid, cmdline in processes_in(workdir).items():
        if any(part.endswith(b"rosd") for part in cmdline) and b"run-rounds" in cmdline and any(run_dir.encode() in part for part in cmdline):
            return pid
    return None


def _kill_a_block_in_its_second_round(workdir: Path, overlay: Path) -> str:
    """Run the pipeline and SIGKILL the first block that reaches round 2 once round 2's rollouts are
    written; returns that run's directory (relative to the workdir). The run must fail."""
    process = subprocess.Popen(snakemake_command(workdir, configs=[overlay]), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = [f"{EXP}/runs/{method}/math/seed0" for method in ("opsd", "rosd")]
    killed, deadline = None, time.time() + 600
    while killed is None and process.poll() is None and time.time() < deadline:
        for run_dir in runs:
            if (workdir / run_dir / "round2" / ".stamps" / "rollouts").exists() and (pid := _block_client(workdir, run_dir)):
                os.kill(pid, signal.SIGKILL)
                killed = run_dir
                break
        time.sleep(0.02)
    assert process.wait(timeout=600) != 0 and killed, "no block was killed in its second round"
    return killed


@pytest.mark.skipif(not Path("/proc").exists(), reason="finds the block's process through /proc")
@pytest.mark.parametrize("resident", [False, True], ids=["stage-processes", "resident"])
def test_blocks_give_the_per_stage_bytes_resume_a_kill_and_rerun_only_what_changed(resident, finished, tmp_path):
    """Both ways of running a block: each stage a fork of the stage worker, or every stage in the
    block's own process with its models resident (`execution.resident`, rosd/stages/resident.py)."""
    overlay = tmp_path / "blocks.yaml"
    overlay.write_text(f"execution: {{rounds_per_job: 2, evaluation_jobs: checkpoint, resident: {str(resident).lower()}}}\n"
                       "evaluation: {every_steps: 2}\n")
    plan = planned_jobs(run(tmp_path, "-n", configs=[overlay]).stdout)
    assert plan["round_block"] == 2 and plan["evaluate_checkpoint"] == 3  # θ0 and each run's round 2
    assert not {"rollouts", "distill", "evaluate"} & set(plan)

    killed = _kill_a_block_in_its_second_round(tmp_path, overlay)
    round1_checkpoint = tmp_path / killed / "round1" / "checkpoint"
    # Resident: round 1's weights were pushed into the engine, never written.
    assert (round1_checkpoint / IN_MEMORY).exists() == resident
    assert any(round1_checkpoint.glob("*.safetensors")) != resident
    finished_stages = [tmp_path / killed / "round1" / name for name in ROUND_FILES] + [tmp_path / killed / "round2" / "rollouts.jsonl"]
    done_before = {p: p.stat().st_mtime_ns for p in finished_stages}
    run(tmp_path, "--rerun-incomplete", configs=[overlay])
    rerun = [p.name for p in done_before if p.stat().st_mtime_ns != done_before[p]]
    if resident:  # round 2's reflect needs round 1's weights, which died with the block: it runs again from its input
        assert rerun == [*ROUND_FILES, "rollouts.jsonl"]
        assert "running the block again from round 1" in (tmp_path / killed / "round2" / "logs" / "round_block.log").read_text()
    else:  # the block resumes in the stage it was in
        assert rerun == [], "a finished stage of the killed block ran again"

    exp, reference = tmp_path / EXP, finished / EXP
    for method in ("opsd", "rosd"):
        for round_index in (1, 2):
            for name in ROUND_FILES:
                path = Path("runs", method, "math", "seed0", f"round{round_index}", name)
                if name == "teacher.pt":  # a zip whose entries are named after the partial file it was written to
                    torch.testing.assert_close(torch.load(exp / path), torch.load(reference / path), rtol=0, atol=0)
                else:
                    assert (exp / path).read_bytes() == (reference / path).read_bytes(), path
    evaluated = sorted(p.relative_to(exp) for p in (exp / "eval").rglob("*.json*"))
    assert len(evaluated) == 12  # (θ0, opsd, rosd) × (math, mcq) × (samples, summary)
    for path in evaluated:
        assert (exp / path).read_bytes() == (reference / path).read_bytes(), path
    # On disk: θ0, and each run's newest checkpoint kept whole; round 1's was removed once trained from.
    models = sorted(str(p.parent.relative_to(exp)) for p in exp.rglob("config.json"))
    assert models == ["models/theta0", "runs/opsd/math/seed0/round2/model", "runs/rosd/math/seed0/round2/model"]
    assert "Nothing to be done" in run(tmp_path, "-n", configs=[overlay]).stdout

    # A reflection setting reaches rosd's reflections: its block reruns from round 1's reflect on.
    warmer = tmp_path / "warmer.yaml"
    warmer.write_text("reflection: {temperature: 0.9}\n")
    planned = run(tmp_path, "-n", configs=[overlay, warmer]).stdout
    assert planned_jobs(planned)["round_block"] == 1 and "method=opsd" not in planned
    round1 = exp / "runs" / "rosd" / "math" / "seed0" / "round1"
    before = {name: (round1 / name).stat().st_mtime_ns for name in ROUND_FILES}
    run(tmp_path, configs=[overlay, warmer])
    after = {name: (round1 / name).stat().st_mtime_ns for name in ROUND_FILES}
    assert [name for name in ROUND_FILES if after[name] != before[name]] == ["reflections.jsonl", "teacher.pt", "metrics.json"]
