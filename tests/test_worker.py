"""The stage worker (rosd/jobs/worker.py): a `rosd` command handed to it computes, writes, prints and
exits as the command run as its own process does, and dies when its command is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from pipeline_run import EXP, environment, run, shell_command

from rosd.jobs import worker

pytestmark = pytest.mark.pipeline  # every test here starts Snakemake or another process

ROUND1 = EXP / "runs" / "rosd" / "math" / "seed0" / "round1"
BAD_SETTINGS = ["prepare-data", "--name", "math", "--split", "test", "--out", "x.jsonl", "--settings", "{bad"]


@pytest.fixture(scope="module")
def worker_socket(tmp_path_factory):
    """A warm worker started as Snakemake's onstart starts it; its socket's path."""
    log = tmp_path_factory.mktemp("worker") / "stage_worker.log"
    process = worker.start(str(log))
    path = os.environ.pop(worker.ENV)  # only the commands of these tests reach it
    deadline = time.time() + 120
    while not os.path.exists(path):
        assert process.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.05)
    yield process, path
    worker.stop(process)
    assert not os.path.exists(path)


def _rosd(argv, cwd, socket_path=None):
    env = environment()
    if socket_path:
        env[worker.ENV] = socket_path
    return subprocess.run(["rosd", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _forks(worker_pid: int) -> list[int]:
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def test_a_round_as_separate_processes_writes_the_bytes_the_worker_wrote(finished, tmp_path):
    """`finished` ran every job through the worker (the default); here one round runs with
    `execution.stage_worker: false`, each job its own process. Sampling, reflection, teacher
    scores and the update are the same bytes: a fork starts from a fresh process's state."""
    overlay = tmp_path / "no_worker.yaml"
    overlay.write_text("execution: {stage_worker: false}\n")
    run(tmp_path, str(ROUND1 / "metrics.json"), configs=[overlay])
    assert not (tmp_path / EXP / "logs" / "stage_worker.log").exists()
    assert (finished / EXP / "logs" / "stage_worker.log").exists()
    for name in ("rollouts.jsonl", "graded.jsonl", "reflections.jsonl", "metrics.json"):
        assert (tmp_path / ROUND1 / name).read_bytes() == (finished / ROUND1 / name).read_bytes(), name
    # teacher.pt's zip records are named after the partial it was written to: compare what it holds
    alone, forked = (torch.load(d / ROUND1 / "teacher.pt", weights_only=False) for d in (tmp_path, finished))
    torch.testing.assert_close(alone, forked, rtol=0, atol=0)


def test_bad_input_reads_the_same_through_the_worker(worker_socket, tmp_path):
    alone = _rosd(BAD_SETTINGS, tmp_path)
    handed = _rosd(BAD_SETTINGS, tmp_path, worker_socket[1])
    assert alone.returncode == handed.returncode == 2
    assert handed.stderr == alone.stderr
    assert handed.stderr.count("\n") == 1 and "rosd prepare-data: error: --settings" in handed.stderr


def test_without_a_worker_to_reach_the_command_runs_alone(tmp_path):
    done = _rosd(BAD_SETTINGS, tmp_path, str(tmp_path / "no-such-socket"))
    assert done.returncode == 2 and "rosd prepare-data: error: --settings" in done.stderr


@pytest.mark.skipif(not Path("/proc").exists(), reason="finds the worker's forks through /proc")
def test_a_killed_command_takes_its_fork_with_it(finished, worker_socket, tmp_path):
    """SIGKILL the `rosd rollouts` command while its fork samples: the fork stops, its output never
    appears, and the worker serves the next command."""
    process, path = worker_socket
    argv = shell_command(finished, str(ROUND1 / "rollouts.jsonl"))
    out = tmp_path / "rollouts.jsonl"
    argv[argv.index("--out") + 1] = str(out)
    settings = json.loads(argv[argv.index("--settings") + 1])
    settings["train"].update(batch_prompts=32, rollouts_per_prompt=32, max_new_tokens=1024, temperature=3.0)
    argv[argv.index("--settings") + 1] = json.dumps(settings)  # long enough to be killed mid-sampling
    env = dict(environment(), **{worker.ENV: path})
    command = subprocess.Popen(["rosd", *argv], cwd=finished, env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (forks := _forks(process.pid)) and time.time() < deadline:
        time.sleep(0.005)
    assert forks, "the worker never forked"
    time.sleep(1.0)  # into the sampling
    command.send_signal(signal.SIGKILL)
    command.wait()
    deadline = time.time() + 15
    while Path(f"/proc/{forks[0]}").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{forks[0]}").exists(), "the fork outlived its command"
    assert not out.exists()
    assert _rosd(BAD_SETTINGS, tmp_path, path).returncode == 2
