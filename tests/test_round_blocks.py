"""Blocks of rounds as one job (`execution.rounds_per_job`, rosd/jobs/blocks.py) and one evaluation job
per checkpoint (`execution.evaluation_jobs: checkpoint`): the same bytes as the per-stage jobs of
the session's `finished` run (tests/conftest.py), a killed block resuming in the stage it was in,
and a changed setting rerunning only the stages it reaches."""

from __future__ import annotations

import importlib.util
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

from rosd.jobs import blocks
from rosd.jobs.planning import round_blocks
from rosd.training.checkpoints import IN_MEMORY

pytestmark = pytest.mark.pipeline  # every test here starts Snakemake or another process


def test_blocks_end_at_every_evaluated_round_and_hold_at_most_n_rounds():
    assert round_blocks(25, [10, 20, 25], 10) == [(1, 10), (11, 20), (21, 25)]
    assert round_blocks(7, [3, 7], 2) == [(1, 2), (3, 3), (4, 5), (6, 7)]
    assert round_blocks(3, [3], 1) == [(1, 1), (2, 2), (3, 3)]
    assert round_blocks(4, [4], 10) == [(1, 4)]


ROUND_FILES = ("rollouts.jsonl", "graded.jsonl", "reflections.jsonl", "teacher.pt", "metrics.json")
STAGE_LOGS = {"rollouts.log", "grade.log", "reflect.log", "teacher_score.log", "distill.log"}


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


def _run_equals_the_per_stage_run(workdir: Path, finished: Path) -> None:
    """Every round file and evaluation of the blocks' run in ``workdir`` has the bytes of the
    per-stage run in ``finished``; on disk: θ0, and each run's newest checkpoint kept whole."""
    exp, reference = workdir / EXP, finished / EXP
    for method in ("opsd", "rosd"):
        for round_index in (1, 2):
            for name in ROUND_FILES:
                path = Path("runs", method, "math", "seed0", f"round{round_index}", name)
                if name == "teacher.pt":  # a zip whose entries are named after the partial file it was written to
                    torch.testing.assert_close(torch.load(exp / path), torch.load(reference / path), rtol=0, atol=0)
                else:
                    assert (exp / path).read_bytes() == (reference / path).read_bytes(), path
            # each stage logs where its per-round rule logs (the block adds its own log)
            logs = Path("runs", method, "math", "seed0", f"round{round_index}", "logs")
            assert STAGE_LOGS <= {p.name for p in (reference / logs).iterdir()}
            assert STAGE_LOGS <= {p.name for p in (exp / logs).iterdir()}
    evaluated = sorted(p.relative_to(exp) for p in (exp / "eval").rglob("*.json*"))
    assert len(evaluated) == 12  # (θ0, opsd, rosd) × (math, mcq) × (samples, summary)
    for path in evaluated:
        assert (exp / path).read_bytes() == (reference / path).read_bytes(), path
    # Round 1's checkpoint was removed once trained from (resident: never written whole).
    models = sorted(str(p.parent.relative_to(exp)) for p in exp.rglob("config.json"))
    assert models == ["models/theta0", "runs/opsd/math/seed0/round2/model", "runs/rosd/math/seed0/round2/model"]


def _resident_blocks(tmp_path: Path) -> Path:
    overlay = tmp_path / "blocks.yaml"
    overlay.write_text("execution: {rounds_per_job: 2, evaluation_jobs: checkpoint, resident: true}\nevaluation: {every_steps: 2}\n")
    plan = planned_jobs(run(tmp_path, "-n", configs=[overlay]).stdout)
    assert plan["round_block"] == 2 and plan["evaluate_checkpoint"] == 3  # θ0 and each run's round 2
    assert not {"rollouts", "distill", "evaluate"} & set(plan)
    return overlay


@pytest.mark.skipif(not Path("/proc").exists(), reason="finds the block's process through /proc")
def test_resident_blocks_give_the_per_stage_bytes_rerun_a_killed_block_and_only_what_changed(finished, tmp_path):
    """Every stage in the block's own process, its models held in memory (`execution.resident`,
    rosd/stages/resident.py)."""
    overlay = _resident_blocks(tmp_path)
    killed = _kill_a_block_in_its_second_round(tmp_path, overlay)
    round1_checkpoint = tmp_path / killed / "round1" / "checkpoint"
    # Round 1's weights were pushed into the engine, never written.
    assert (round1_checkpoint / IN_MEMORY).exists() and not any(round1_checkpoint.glob("*.safetensors"))
    finished_stages = [tmp_path / killed / "round1" / name for name in ROUND_FILES] + [tmp_path / killed / "round2" / "rollouts.jsonl"]
    done_before = {p: p.stat().st_mtime_ns for p in finished_stages}
    run(tmp_path, "--rerun-incomplete", configs=[overlay])
    # Round 2's reflect needs round 1's weights, which died with the block: it ran again from its input.
    assert [p.name for p in done_before if p.stat().st_mtime_ns != done_before[p]] == [*ROUND_FILES, "rollouts.jsonl"]
    assert "running the block again from round 1" in (tmp_path / killed / "round2" / "logs" / "round_block.log").read_text()
    _run_equals_the_per_stage_run(tmp_path, finished)
    assert "Nothing to be done" in run(tmp_path, "-n", configs=[overlay]).stdout

    # A reflection setting reaches rosd's reflections: its block reruns from round 1's reflect on.
    warmer = tmp_path / "warmer.yaml"
    warmer.write_text("reflection: {temperature: 0.9}\n")
    planned = run(tmp_path, "-n", configs=[overlay, warmer]).stdout
    assert planned_jobs(planned)["round_block"] == 1 and "method=opsd" not in planned
    round1 = tmp_path / EXP / "runs" / "rosd" / "math" / "seed0" / "round1"
    before = {name: (round1 / name).stat().st_mtime_ns for name in ROUND_FILES}
    run(tmp_path, configs=[overlay, warmer])
    after = {name: (round1 / name).stat().st_mtime_ns for name in ROUND_FILES}
    assert [name for name in ROUND_FILES if after[name] != before[name]] == ["reflections.jsonl", "teacher.pt", "metrics.json"]


@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None, reason="several training processes need accelerate: pip install 'rosd[train]'")
def test_a_resident_block_of_two_training_processes_gives_the_bytes_of_a_block_of_stage_processes(tmp_path):
    """`train.launcher: accelerate` over two CPU processes (gloo) for sdpo (an EMA teacher), two rounds
    as one block. Resident: every process runs the block, holding its shards of the student, of its
    AdamW state and of the EMA teacher across the rounds. Not: each stage a fork of the stage worker
    and each distill two new processes, as the per-stage rules run them (the resident test above
    pins the block's commands to the rules' bytes)."""
    run_dir = EXP / "runs" / "sdpo" / "math" / "seed0"
    common = "methods: [sdpo]\nbenchmarks: [math]\nevaluation: {every_steps: null}\ntrain: {launcher: accelerate, num_processes: 2}\n"
    ways = {resident: f"{{rounds_per_job: 20, resident: {resident}, evaluation_jobs: checkpoint}}" for resident in ("false", "true")}
    for name, execution in ways.items():
        (tmp_path / name).mkdir()
        overlay = tmp_path / name / "overlay.yaml"
        overlay.write_text(f"{common}execution: {execution}\n")
        run(tmp_path / name, str(run_dir / "round2" / "metrics.json"), configs=[overlay])
    stages, block = tmp_path / "false" / run_dir, tmp_path / "true" / run_dir
    for round_index in (1, 2):
        for name in ROUND_FILES:
            path = Path(f"round{round_index}", name)
            if name == "teacher.pt":
                torch.testing.assert_close(torch.load(block / path), torch.load(stages / path), rtol=0, atol=0)
            else:
                assert (block / path).read_bytes() == (stages / path).read_bytes(), path
    # the weights, the EMA teacher and each process's AdamW shard after round 2
    for name in ("model.safetensors", "ema_teacher/model.safetensors", "trainer_state/__0_0.distcp", "trainer_state/__1_0.distcp"):
        path = Path("round2", "checkpoint", name)
        assert (block / path).read_bytes() == (stages / path).read_bytes(), path
    # One engine for both rounds, given round 1's weights in memory (that checkpoint was never
    # written whole); process 0 alone logs the block's progress.
    log = (block / "round2" / "logs" / "round_block.log").read_text()
    assert log.count("pushed the weights of") == 1 and log.count("round 2/2: distill in") == 1


class _Killed(Exception):
    """Stands for a SIGKILL of the block in the middle of a stage."""


def _fake_stages(monkeypatch, ran: list, kill_at: tuple[int, str] | None = None) -> None:
    """Each step of a block writes its outputs (a checkpoint: a directory with one file) and is
    recorded in ``ran`` as (round, stage), instead of running; the step ``kill_at`` dies first."""

    def execute(step, held, processes=None):
        where = (int(step.outputs[0].parent.name.removeprefix("round")), step.stage)
        if where == kill_at:
            raise _Killed
        for output in step.outputs:
            if output.name == "checkpoint":
                output.mkdir(parents=True, exist_ok=True)
                (output / "model.safetensors").write_text(f"weights of {where}")
            else:
                output.parent.mkdir(parents=True, exist_ok=True)
                output.write_text(f"{where} {step.argv}")
        ran.append(where)

    monkeypatch.setattr(blocks, "_execute", execute)


def _plan(reflect_temperature: float = 1.0) -> dict:
    stages = {name: {"round": 1} for name in ("rollouts", "grade", "teacher", "distill")}
    return {"first": 1, "last": 2, "stages": {**stages, "reflect": {"round": 1, "temperature": reflect_temperature}},
            "trainer": None, "frozen_teacher": True, "keep_all": False}


def test_a_block_resumes_in_the_stage_it_was_in(tmp_path, monkeypatch):
    """The stamps of rosd/jobs/blocks.py, without processes: killed in round 2's reflect, the block
    run again skips every finished stage; a changed reflection setting reruns from round 1's reflect."""
    for name in ("theta0", "data.jsonl"):
        (tmp_path / name).write_text(name)
    inputs = {"model": str(tmp_path / "theta0"), "teacher": str(tmp_path / "theta0"), "data": str(tmp_path / "data.jsonl")}
    run_dir, stages = tmp_path / "run", ["rollouts", "grade", "reflect", "teacher", "distill"]
    ran = []
    _fake_stages(monkeypatch, ran, kill_at=(2, "reflect"))
    with pytest.raises(_Killed):
        blocks._run_block(run_dir, inputs, _plan())
    assert ran == [(1, s) for s in stages] + [(2, "rollouts"), (2, "grade")]
    ran.clear()
    _fake_stages(monkeypatch, ran)
    blocks._run_block(run_dir, inputs, _plan())
    assert ran == [(2, s) for s in stages[2:]]
    # Round 1's checkpoint was removed once round 2 trained from it, and marked so.
    assert not (run_dir / "round1" / "checkpoint").exists() and (run_dir / "round1" / blocks.STAMPS / blocks.REMOVED).exists()
    ran.clear()
    blocks._run_block(run_dir, inputs, _plan())
    assert ran == []
    # A reflection setting: round 1 from its reflect on (its distill writes round 1's checkpoint
    # again), then round 2, whose inputs changed with it.
    blocks._run_block(run_dir, inputs, _plan(reflect_temperature=0.9))
    assert ran == [(1, s) for s in stages[2:]] + [(2, s) for s in stages]
    # Round 2's reflect to run again and round 1's checkpoint gone: `run_rounds` starts the block over.
    (run_dir / "round2" / blocks.STAMPS / "reflect").unlink()
    with pytest.raises(blocks._LostCheckpoint, match="round 2: reflect must run again and .*round1/checkpoint is gone"):
        blocks._run_block(run_dir, inputs, _plan(reflect_temperature=0.9))
