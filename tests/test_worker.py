"""The stage worker (rosd/jobs/worker.py): a `rosd` command handed to it computes, writes, prints and
exits as the command run as its own process does, and dies when its command is killed; a bad
request (any shape, size or pace) is refused in one line of its log while the worker serves on."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import torch
from pipeline_run import EXP, environment, run, shell_command, snakemake_command

from rosd.jobs import worker

ROUND1 = EXP / "runs" / "rosd" / "math" / "seed0" / "round1"
BAD_SETTINGS = ["prepare-data", "--name", "math", "--split", "test", "--out", "x.jsonl", "--settings", "{bad"]
REFUSED = "rosd worker: refused a request: "


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
    yield process, path, log
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


@pytest.mark.pipeline
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


@pytest.mark.pipeline
def test_bad_input_reads_the_same_through_the_worker(worker_socket, tmp_path):
    alone = _rosd(BAD_SETTINGS, tmp_path)
    handed = _rosd(BAD_SETTINGS, tmp_path, worker_socket[1])
    assert alone.returncode == handed.returncode == 2
    assert handed.stderr == alone.stderr
    assert handed.stderr.count("\n") == 1 and "rosd prepare-data: error: --settings" in handed.stderr


@pytest.mark.pipeline
def test_without_a_worker_to_reach_the_command_runs_alone(tmp_path):
    done = _rosd(BAD_SETTINGS, tmp_path, str(tmp_path / "no-such-socket"))
    assert done.returncode == 2 and "rosd prepare-data: error: --settings" in done.stderr


@pytest.mark.pipeline
@pytest.mark.skipif(not Path("/proc").exists(), reason="finds the worker's forks through /proc")
def test_a_killed_command_takes_its_fork_with_it(finished, worker_socket, tmp_path):
    """SIGKILL the `rosd rollouts` command while its fork samples: the fork stops, its output never
    appears, and the worker serves the next command."""
    process, path, _ = worker_socket
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


# -- requests the worker refuses -------------------------------------------------------------------

TASK_SETTINGS = {"train_size": 4, "test_size": 2, "seed": 0}


def _frame(body: bytes, length: int | None = None) -> bytes:
    return worker._LENGTH.pack(len(body) if length is None else length) + body


def _request(**changes) -> bytes:
    """A well-formed request body (a job that only prints its help), with ``changes``."""
    return json.dumps({"argv": ["prepare-data", "--help"], "cwd": "/", "env": {}, **changes}).encode()


# kind of bad request: (the bytes sent, how many file descriptors go with them, the worker's log line)
BAD_REQUESTS = {
    "a JSON list": (_frame(b"[1]"), 3, "not a JSON object of exactly argv, cwd and env"),
    "an empty object": (_frame(b"{}"), 3, "not a JSON object of exactly argv, cwd and env"),
    "argv not strings": (_frame(_request(argv=["prepare-data", 1])), 3, "argv is not a list of strings"),
    "cwd not a directory": (_frame(_request(cwd="/no/such/directory")), 3, "cwd is not the path of a directory"),
    "env values not strings": (_frame(_request(env={"HOME": 1})), 3, "env is not an object of variable names to strings"),
    "bytes that are not JSON": (_frame(b"\xff\xfe junk"), 3, "not a JSON request (UnicodeDecodeError: "),
    "JSON nested too deep": (_frame(b"[" * 200_000), 3, "not a JSON request (RecursionError: "),
    "an oversize length": (
        _frame(b"", worker.MAX_REQUEST_BYTES + 1), 3,
        f"a request of {worker.MAX_REQUEST_BYTES + 1} bytes announced, over the {worker.MAX_REQUEST_BYTES}-byte limit",
    ),
    "junk bytes, unframed": (b"\xff\xfe junk\n", 0, f"a request of {0xFFFE206A} bytes announced, over the"),
    "no fds": (_frame(_request()), 0, "0 file descriptors sent, not 3 (stdin, stdout, stderr)"),
    "four fds": (_frame(_request()), 4, "more than 3 file descriptors sent"),
    "a body cut short": (_frame(b'{"argv"', 100), 3, "the client closed its connection before its request was whole"),
}  # fmt: skip


def _send(path: str, frame: bytes, fds: int) -> bytes:
    """Send ``frame`` to the worker at ``path`` with ``fds`` descriptors (of /dev/null) on its first
    bytes, as a client does, and stop writing: what the worker answered (b"": it refused)."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(30)
            client.connect(path)
            if fds:
                socket.send_fds(client, [frame[:1]], [devnull] * fds)
            client.sendall(frame[1 if fds else 0 :])
            client.shutdown(socket.SHUT_WR)
            return client.recv(64)
    except (BrokenPipeError, ConnectionResetError):  # refused while it was still sending
        return b""
    finally:
        os.close(devnull)


def _assert_served(path: str, tmp_path: Path, monkeypatch) -> None:
    """Hand a well-formed prepare-data job to the worker at ``path`` as the `rosd` command does: the
    worker ran it (the command did not fall back to its own process), it exited 0 and wrote its tasks."""
    out = tmp_path / "tasks.jsonl"
    out.unlink(missing_ok=True)
    monkeypatch.chdir(tmp_path)
    for name, value in {worker.ENV: path, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, value)
    argv = ["prepare-data", "--name", "math", "--split", "test", "--out", str(out), "--settings", json.dumps(TASK_SETTINGS)]
    assert worker.delegate(argv) == 0
    assert len(out.read_text().splitlines()) == TASK_SETTINGS["test_size"]


@pytest.mark.pipeline
@pytest.mark.parametrize("kind", BAD_REQUESTS)
def test_a_bad_request_is_refused_in_one_line_and_the_worker_serves_on(kind, worker_socket, tmp_path, monkeypatch):
    _, path, log = worker_socket
    frame, fds, reason = BAD_REQUESTS[kind]
    before = log.read_text()
    assert _send(path, frame, fds) == b"", "the worker answered a bad request with a fork's pid"
    logged = log.read_text()[len(before) :]
    assert logged.startswith(REFUSED) and reason in logged and logged.count("\n") == 1, logged
    _assert_served(path, tmp_path, monkeypatch)


@pytest.mark.pipeline
def test_a_trickling_client_stalls_no_job_and_is_refused_after_the_timeout(worker_socket, tmp_path, monkeypatch):
    _, path, log = worker_socket
    before = log.read_text()
    frame = _frame(_request())
    devnull = os.open(os.devnull, os.O_RDWR)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(path)
        connected = time.monotonic()
        socket.send_fds(client, [frame[:1]], [devnull] * 3)
        os.close(devnull)
        _assert_served(path, tmp_path, monkeypatch)  # while the trickling request is open
        client.sendall(frame[1:2])
        client.settimeout(worker.REQUEST_TIMEOUT_SECONDS + 30)
        assert client.recv(64) == b""
        waited = time.monotonic() - connected
    assert worker.REQUEST_TIMEOUT_SECONDS <= waited < worker.REQUEST_TIMEOUT_SECONDS + 5
    refusal = f"no whole request within {worker.REQUEST_TIMEOUT_SECONDS:g} s of connecting"
    assert log.read_text()[len(before) :] == f"{REFUSED}{refusal}\n"


@pytest.mark.pipeline
def test_a_request_near_the_size_limit_runs_in_the_worker(worker_socket, tmp_path, monkeypatch):
    monkeypatch.setenv("ROSD_TEST_BULK", "x" * (worker.MAX_REQUEST_BYTES // 2))
    _assert_served(worker_socket[1], tmp_path, monkeypatch)


def test_a_request_over_the_size_limit_is_not_sent_and_runs_in_its_own_process(monkeypatch):
    with tempfile.TemporaryDirectory(prefix="rosd-test-") as directory:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(os.path.join(directory, "socket"))
        listener.listen(1)
        listener.setblocking(False)
        monkeypatch.setenv(worker.ENV, listener.getsockname())
        monkeypatch.setenv("ROSD_TEST_BULK", "x" * worker.MAX_REQUEST_BYTES)
        assert worker.delegate(["prepare-data", "--help"]) is None
        with pytest.raises(BlockingIOError):  # it never connected
            listener.accept()
        listener.close()


def test_a_peer_of_another_user_is_refused(monkeypatch):
    """The worker runs jobs only for its own user (SO_PEERCRED); here it believes it runs as another."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        assert worker._peer_refusal(ours) is None
        uid = os.getuid()
        monkeypatch.setattr(worker.os, "getuid", lambda: uid + 1)
        refusal = f"from a process of uid {uid} (pid {os.getpid()}); the worker serves its own uid {uid + 1} only"
        assert worker._peer_refusal(ours) == refusal


@pytest.mark.pipeline
@pytest.mark.skipif(os.getuid() != 0, reason="connects as another user, which needs root")
def test_a_process_of_another_user_is_refused_and_the_worker_serves_on(worker_socket, tmp_path, monkeypatch):
    """A fork of this test becomes `nobody` and sends a well-formed request, the socket's directory
    opened to it for the test: the worker refuses it by its uid (SO_PEERCRED) alone."""
    _, path, log = worker_socket
    nobody = 65534
    modes = {name: os.stat(name).st_mode for name in (os.path.dirname(path), path)}
    before = log.read_text()
    for name in modes:
        os.chmod(name, 0o777)
    try:
        child = os.fork()
        if child == 0:
            code = 2
            try:
                os.setuid(nobody)
                code = 0 if _send(path, _frame(_request()), 3) == b"" else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
    finally:
        for name, mode in modes.items():
            os.chmod(name, mode)
    assert os.waitstatus_to_exitcode(status) == 0, "the worker answered another user's request"
    refusal = f"from a process of uid {nobody} (pid {child}); the worker serves its own uid 0 only"
    assert log.read_text()[len(before) :] == f"{REFUSED}{refusal}\n"
    _assert_served(path, tmp_path, monkeypatch)


@pytest.mark.pipeline
def test_bad_requests_during_a_live_run_leave_it_finishing(tmp_path, monkeypatch):
    """Every kind of bad request, and a trickling client, sent to the worker of a running tiny
    pipeline: each is one refusal line, a job handed over meanwhile runs, and the run ends with 0.
    The run goes as far as rosd's round 2: some 20 s after its worker is ready, well past the
    trickling client's wait (``worker.REQUEST_TIMEOUT_SECONDS``)."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    log = workdir / EXP / "logs" / "stage_worker.log"
    target = ROUND1.parent / "round2" / "metrics.json"
    with open(tmp_path / "snakemake.out", "w") as output:
        command = subprocess.Popen(snakemake_command(workdir, str(target)), env=environment(), stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while not (ready := re.search(r" ready on (\S+)", log.read_text() if log.exists() else "")):
            assert command.poll() is None and time.time() < deadline, "the run's worker never became ready"
            time.sleep(0.1)
        path = ready.group(1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as trickling:
            trickling.connect(path)
            trickling.sendall(b"\x00")
            for frame, fds, _ in BAD_REQUESTS.values():
                assert _send(path, frame, fds) == b""
            _assert_served(path, tmp_path, monkeypatch)
            trickling.settimeout(worker.REQUEST_TIMEOUT_SECONDS + 30)
            assert trickling.recv(64) == b""
        assert command.poll() is None, "the run ended before the bad requests were all sent"
        returncode = command.wait(timeout=1200)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
    assert returncode == 0, (tmp_path / "snakemake.out").read_text()[-3000:]
    assert (workdir / target).exists()
    logged = log.read_text()
    assert logged.count(REFUSED) == len(BAD_REQUESTS) + 1 and "Traceback" not in logged, logged
