"""Several rounds of one run in one job (`execution.rounds_per_job` > 1): the same work as fewer
Snakemake jobs, so the paper's matrix plans in seconds (benchmarks/paper_dag.py).

A block runs rounds ``first..last``. Each round runs the five commands the per-round rules run
(workflow/rules/round.smk), with the same arguments and settings, so every round directory gets the
same files with the same bytes: rollouts.jsonl, graded.jsonl, reflections.jsonl, teacher.pt,
checkpoint/, metrics.json and logs/. Snakemake sees only the block's inputs and its last round's
checkpoint and metrics; the rounds before are this module's business:

- **Resuming.** After each stage the block writes a stamp, ``round<r>/.stamps/<stage>``: a digest
  of the stage's command and of what it read (the stamps of the stages before it, or the block's
  input files, by size and modification time). Run again (after a kill, `--rerun-incomplete`; or
  because a setting changed), the block skips every stage whose stamp matches and whose outputs are
  there. So a killed block resumes in the stage it was in, and a changed reflection setting reruns
  from the block's first reflection on, as the per-round rules do.
- **Resident models** (`execution.resident`). The block calls the stage functions in its own
  process, which keeps the engine, the frozen teacher and the trainer in memory across stages and
  rounds and pushes each round's new weights into the engine (rosd/stages/resident.py); only the
  block's last checkpoint is written whole. A later run that needs an unwritten checkpoint runs the
  block again from its input. Otherwise each stage is a fork of the stage worker, or a process.
- **Several training processes** (resident, `train.launcher: accelerate`). Every process the
  launcher started runs the block: process 0 decides what runs, runs the generation and scoring
  stages while the others wait, and all of them train their shards of the held student.
- **Disk.** A round's checkpoint is removed once the next round has trained from it, unless
  `checkpoints.keep: all`; the block's input and output checkpoints are Snakemake's (temp()).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rosd.io.files import atomic_path, lifeline
from rosd.jobs import worker
from rosd.jobs.planning import RESIDENT_ENV
from rosd.jobs.registry import LOG_FORMAT, STAGES
from rosd.training.checkpoints import IN_MEMORY, SNAKEMAKE_TIMESTAMP

log = logging.getLogger(__name__)

STAMPS = ".stamps"
REMOVED = "checkpoint_removed"  # in a round's STAMPS: its checkpoint was trained from, then removed


@dataclass(frozen=True)
class Step:
    """One stage command of one round."""

    stage: str
    argv: list[str]  # the `rosd` arguments, as the per-round rule's command has them
    launcher: list[str] | None  # None: a `rosd` command; else the trainer's (accelerate launch ...)
    reads: list[str]  # the files this command reads
    outputs: list[Path]


def fingerprint(path: str | os.PathLike) -> list:
    """Name, size and modification time of a file or of every file under a directory (links
    followed: θ0 is links to the model it came from)."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    out = []
    for p in files:
        if p.name == SNAKEMAKE_TIMESTAMP:
            continue
        stat = p.stat()
        out.append([str(p.relative_to(root)) if root.is_dir() else p.name, stat.st_size, stat.st_mtime_ns])
    return out


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def round_steps(round_dir: Path, model: str, teacher: str, data: str, settings: dict, trainer: list[str] | None) -> list[Step]:
    """The five stage commands of the round in ``round_dir``, from checkpoint ``model``."""

    def command(stage: str, name: str, files: dict[str, str]) -> list[str]:
        # the per-round rule's log file (workflow/rules/round.smk); ``name``: the stage's settings
        argv = ["--log", str(round_dir / "logs" / f"{stage.replace('-', '_')}.log"), stage]
        for option, path in files.items():
            argv += [f"--{option}", path]
        return argv + ["--settings", json.dumps(settings[name], sort_keys=True)]

    rollouts, graded = round_dir / "rollouts.jsonl", round_dir / "graded.jsonl"
    reflections, scores = round_dir / "reflections.jsonl", round_dir / "teacher.pt"
    checkpoint, metrics = round_dir / "checkpoint", round_dir / "metrics.json"
    return [
        Step("rollouts", command("rollouts", "rollouts", {"model": model, "data": data, "out": str(rollouts)}), None, [model, data], [rollouts]),
        Step("grade", command("grade", "grade", {"rollouts": str(rollouts), "out": str(graded)}), None, [str(rollouts)], [graded]),
        Step("reflect", command("reflect", "reflect", {"model": model, "graded": str(graded), "out": str(reflections)}), None, [model, str(graded)], [reflections]),
        Step(
            "teacher",
            command("teacher-score", "teacher", {"teacher": teacher, "student": model, "reflections": str(reflections), "out": str(scores)}),
            None, [teacher, model, str(reflections)], [scores],
        ),
        Step(
            "distill",
            command("distill", "distill", {"model": model, "reflections": str(reflections), "teacher-scores": str(scores), "out-model": str(checkpoint), "out-metrics": str(metrics)}),
            trainer, [model, str(reflections), str(scores)], [checkpoint, metrics],
        ),
    ]  # fmt: skip


class TrainingProcesses:
    """The processes of a resident block under `train.launcher: accelerate` (started by `accelerate
    launch` or torchrun): process 0 runs every stage but training, the others wait for it."""

    # Process 0's generation and scoring stages may take hours; a process that dies meanwhile is
    # stopped by the launcher with the others, so a long wait is not a hang.
    WAIT_HOURS = 48

    def __init__(self, device: str):
        import datetime

        import torch.distributed as dist

        from rosd.training.sharding import join_processes

        join_processes(device)
        self._dist = dist
        self.is_main = dist.get_rank() == 0
        # The waiting is done over gloo, on the CPU: on CUDA a waiting NCCL collective keeps its GPU busy.
        self._control = dist.new_group(backend="gloo", timeout=datetime.timedelta(hours=self.WAIT_HOURS))

    def share(self, value):
        """Process 0's ``value``, on every process."""
        box = [value]
        self._dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]

    def run_on_main(self, step: Step) -> None:
        """``step`` in process 0; the others learn how it ended and fail with it."""
        failure = None
        if self.is_main:
            try:
                _call_here(step)
            except BaseException as error:  # told to the others, then raised
                failure = error
        message = self.share(None if failure is None else f"{step.stage} failed in process 0: {failure}")
        if failure is not None:
            raise failure
        if message is not None:
            raise SystemExit(message)


def _execute(step: Step, held, processes: TrainingProcesses | None = None) -> None:
    if processes is not None and step.launcher is None:  # not training: process 0's
        return processes.run_on_main(step)
    if held is not None:  # a resident block (rosd.stages.resident.Held)
        return _call_here(step)
    status = worker.delegate(step.argv) if step.launcher is None else None  # a fork of the stage worker
    if status is None:
        command = [sys.executable, "-m", "rosd.cli"] if step.launcher is None else step.launcher
        block = os.getpid()
        # The stage dies with this block, however the block dies (the kernel's SIGTERM).
        status = subprocess.run([*command, *step.argv], preexec_fn=lambda: lifeline.die_with_parent(block)).returncode
    if status != 0:
        raise SystemExit(f"{step.stage} failed (exit status {status}); its log: {step.argv[1]}")


def _call_here(step: Step) -> None:
    """The step's stage function, called in this process (a resident block), its log lines also
    written to the step's ``--log`` file."""
    log_file, stage, options = step.argv[1], STAGES[step.argv[2]], step.argv[3:]
    kwargs = {options[i].removeprefix("--").replace("-", "_"): options[i + 1] for i in range(0, len(options), 2)}
    kwargs["settings"] = json.loads(kwargs["settings"])
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    try:
        stage.load()(**kwargs)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _gone(path: str, held) -> bool:
    """A checkpoint a stage can no longer read: removed after training from it, or held in memory
    by a block process that is gone (``held``: this resident block's models, or None)."""
    in_memory_elsewhere = (Path(path) / IN_MEMORY).exists() and not (held is not None and held.holds(path))
    return not os.path.exists(path) or _removed(Path(path)) or in_memory_elsewhere


class _LostCheckpoint(Exception):
    """A stage must run again and the round checkpoint it reads was already removed."""


def _removed(path: Path) -> bool:
    return path.name == "checkpoint" and (path.parent / STAMPS / REMOVED).exists()


def _round_settings(stages: dict, round_index: int) -> dict:
    return {name: {**s, "round": round_index} if "round" in s else s for name, s in stages.items()}


def _next_action(step: Step, stamp: str, stamp_file: Path, held) -> str:
    """What to do with ``step``: "done" (its outputs and stamp are there), "run", or why it cannot
    run (a checkpoint it reads is gone)."""
    there = all(p.exists() or _removed(p) for p in step.outputs)
    if there and stamp_file.exists() and stamp_file.read_text() == stamp:
        return "done"
    if missing := [p for p in step.reads if _gone(p, held)]:
        return f"{step.stage} must run again and {missing[0]} is gone"
    return "run"


def _run_block(run_dir: Path, inputs: dict[str, str], plan: dict, held=None, processes: TrainingProcesses | None = None) -> None:
    first, last = plan["first"], plan["last"]
    # Files are read and written by the main process; under several, it tells the others what to do.
    main = processes is None or processes.is_main
    # What a stage read, by path: the block's inputs by their files, a stage's outputs by its stamp.
    known = {path: digest(fingerprint(path)) for path in inputs.values()} if main else {}
    model = inputs["model"]
    for round_index in range(first, last + 1):
        round_dir = run_dir / f"round{round_index}"
        teacher = inputs["teacher"] if plan["frozen_teacher"] else model
        settings = _round_settings(plan["stages"], round_index)
        for step in round_steps(round_dir, model, teacher, inputs["data"], settings, plan["trainer"]):
            stamp_file = round_dir / STAMPS / step.stage
            stamp = digest(step.launcher, step.argv, [known[path] for path in step.reads]) if main else None
            action = _next_action(step, stamp, stamp_file, held) if main else None
            if processes is not None:
                action = processes.share(action)
            if action not in ("done", "run"):
                raise _LostCheckpoint(f"round {round_index}: {action}")
            if action == "run":
                if main:
                    (round_dir / STAMPS / REMOVED).unlink(missing_ok=True)
                started = time.perf_counter()
                _execute(step, held, processes)
                if main:
                    with atomic_path(stamp_file) as tmp:
                        tmp.write_text(stamp)
                log.info("round %d/%d: %s in %.1f s", round_index, last, step.stage, time.perf_counter() - started)
            else:
                log.info("round %d/%d: %s already done", round_index, last, step.stage)
            known.update({str(p): stamp for p in step.outputs})
        previous = run_dir / f"round{round_index - 1}" / "checkpoint"
        if main and round_index > first and not plan["keep_all"] and previous.exists():
            # Trained from, and no evaluation reads it (blocks end at evaluated rounds). The mark
            # first: a kill halfway through the removal leaves a checkpoint known to be incomplete.
            (previous.parent / STAMPS / REMOVED).touch()
            shutil.rmtree(previous)
        model = str(round_dir / "checkpoint")


def run_rounds(*, model: str, teacher: str, data: str, out_model: str, out_metrics: str, settings: dict) -> None:
    """Rounds ``settings["first"]..settings["last"]`` of one run, from checkpoint ``model``; the
    last round writes ``out_model`` and ``out_metrics``. ``settings``: ``stages`` (each stage's
    settings for the first round: the per-round rules' settings, whose ``round`` is set per round),
    ``trainer`` (the launcher's argv, or null for `rosd`), ``frozen_teacher`` and ``keep_all``."""
    run_dir = Path(out_model).parent.parent
    expected = run_dir / f"round{settings['last']}"
    if Path(out_model) != expected / "checkpoint" or Path(out_metrics) != expected / "metrics.json":
        raise ValueError(f"--out-model and --out-metrics must be in {expected}, the block's last round")
    inputs = {"model": model, "teacher": teacher, "data": data}
    # The last checkpoint is this job's output, never one removed after training from it (a mark
    # left there by blocks cut differently before, `rounds_per_job` changed).
    (expected / STAMPS / REMOVED).unlink(missing_ok=True)
    # A resident block holds its models (rosd.stages.resident) and writes whole only the checkpoint
    # Snakemake reads, or every one under checkpoints.keep: all.
    holding, processes = contextlib.nullcontext(), None
    if os.environ.get(RESIDENT_ENV) == "1":
        # Imported here: torch and the models, which a block of stage processes needs neither of.
        from rosd.stages import resident

        last_rounds = range(settings["first"] if settings["keep_all"] else settings["last"], settings["last"] + 1)
        holding = resident.hold({str(run_dir / f"round{r}" / "checkpoint") for r in last_rounds})
        if settings["trainer"] is not None:  # every training process runs this block
            processes = TrainingProcesses(settings["stages"]["distill"]["device"])
            if not processes.is_main:
                logging.getLogger().setLevel(logging.WARNING)  # process 0 tells the block's progress
    with holding as held:
        _run_block_or_again(run_dir, inputs, settings, held, processes)


def _run_block_or_again(run_dir: Path, inputs: dict[str, str], settings: dict, held, processes: TrainingProcesses | None) -> None:
    try:
        _run_block(run_dir, inputs, settings, held, processes)
    except _LostCheckpoint as lost:
        # A kill after a round removed its predecessor's checkpoint and before Snakemake recorded the
        # block: the rounds are computed again from the block's input (the same seeds, the same bytes).
        log.warning("%s: running the block again from round %d", lost, settings["first"])
        if processes is None or processes.is_main:
            for round_index in range(settings["first"], settings["last"] + 1):
                shutil.rmtree(run_dir / f"round{round_index}" / STAMPS, ignore_errors=True)
        _run_block(run_dir, inputs, settings, held, processes)
