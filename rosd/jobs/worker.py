"""The stage worker: one process pays the imports once, and each `rosd <stage>` job runs in a fork
of it instead of a fresh interpreter.

A model stage started as its own process spends 4-5 s before its work: the interpreter, torch,
transformers, and the modeling code transformers imports inside the first `from_pretrained`. At one
optimizer step per round that is most of a small model's round (benchmarks/round_cost.py). Here
Snakemake starts one worker per run (`execution.stage_worker`, workflow/rules/execution.smk) and
names its socket in ``ROSD_WORKER``; `rosd <stage>` then hands its argv, environment, working
directory and stdin/stdout/stderr to the worker and exits with the fork's status. The fork runs the
same `rosd.cli.main`, so a job computes and writes exactly what it would as its own process; the
jobs, their files and Snakemake's caching are unchanged. No worker to reach (none started, not
ready yet, another machine's socket under SLURM): the command runs in its own process as before.

Fork safety: the worker sets torch to one thread before any tensor exists and never runs backward,
so no OpenMP or autograd thread pool exists to be copied half-alive into a fork (a fork made after
a multi-threaded region hangs at its first parallel op); each fork starts from torch's fresh random
state and sets its own thread count from the job's ``OMP_NUM_THREADS``.

Lifetime: a fork lives as long as the `rosd` command that handed it over: when that command dies
(Snakemake killed the job), the worker sends the fork SIGTERM, which stops it as the lifeline does
(partials removed, its own children killed, exit 3), and SIGKILL after `KILL_GRACE_SECONDS`. The
worker ends on SIGTERM (Snakemake's onsuccess/onerror) or when the Snakemake that started it is
gone (a SIGKILL), taking its forks with it.

Requests: the loop reads each connection's request as its bytes arrive, beside the other clients and
the running jobs, so no client stalls the others. A request comes from a process of the worker's own
user (``SO_PEERCRED``), within `MAX_REQUEST_BYTES` and `REQUEST_TIMEOUT_SECONDS`, as one JSON object
of ``argv`` (strings), ``cwd`` (a directory) and ``env`` (names to strings) with exactly three file
descriptors; any other is refused with one line in the worker's log and its connection closed
before a fork exists, and the `rosd` command that sent it then runs the job in its own process.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from typing import NoReturn

ENV = "ROSD_WORKER"
KILL_GRACE_SECONDS = 5.0
TICK_SECONDS = 0.02
_LENGTH = struct.Struct("!I")
_STATUS = struct.Struct("!i")
_PID = struct.Struct("!i")
_PEER = struct.Struct("3i")  # SO_PEERCRED's struct ucred: pid, uid, gid
# Above any command line and environment the kernel lets a process have (ARG_MAX: 2 MiB by default),
# even JSON-escaped; a larger request is not sent, and its command runs in its own process.
MAX_REQUEST_BYTES = 16 * 2**20
# A request is written at once after its connection (milliseconds); slower is a stalled client.
REQUEST_TIMEOUT_SECONDS = 5.0
# Connections whose request is still arriving: more are refused, so a flood cannot use up the fds.
MAX_ARRIVING = 64
_CHUNK = 1 << 18
_JOB_FDS = 3  # the job's stdin, stdout, stderr
# Options whose value is a model directory: their architecture's modeling code is imported in the
# worker before the fork, so each fork does not import it again.
MODEL_OPTIONS = ("--model", "--teacher", "--student")


# -- the `rosd` command's side ---------------------------------------------------------------------


def delegate(argv: list[str]) -> int | None:
    """Run ``rosd argv`` in the worker named by ``ROSD_WORKER``: its exit status, or None when no
    worker took it (the caller then runs it in its own process). Not under a distributed launcher:
    each rank is its own process on purpose."""
    path = os.environ.get(ENV)
    if not path or "WORLD_SIZE" in os.environ:
        return None
    try:
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    except OSError:  # no working directory any more: the command says so in its own process
        return None
    if len(request) > MAX_REQUEST_BYTES:  # the worker would refuse it
        return None
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
        socket.send_fds(client, [_LENGTH.pack(len(request))], [0, 1, 2])
        client.sendall(request)
        if _read_exactly(client, _PID.size) is None:  # refused before a fork began: run it here
            return None
        status = _read_exactly(client, _STATUS.size)
    except OSError:
        return None
    finally:
        client.close()
    if status is None:
        print(f"rosd: the stage worker ({path}) ended while it ran this job; see its log", file=sys.stderr)
        return 1
    return _STATUS.unpack(status)[0]


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


# -- the worker's side -----------------------------------------------------------------------------


def warm_up() -> dict:
    """Import what every stage imports, load the shipped world model once (transformers' lazy
    imports), all on one torch thread. Returns what each fork restores."""
    import tqdm

    tqdm.tqdm.monitor_interval = 0  # no monitor thread, whose lock a fork could inherit held
    import torch

    fresh = {"threads": torch.get_num_threads(), "rng": torch.get_rng_state()}
    torch.set_num_threads(1)
    import importlib

    import transformers.generation.utils  # noqa: F401  (what `generate` imports on its first call)

    from rosd.jobs.registry import STAGES
    from rosd.models.loading import load_model, load_tokenizer
    from rosd.world import THETA0_DIR

    # rosd.reporting.tracking: the track command's; math_verify: the grade stage's check workers fork from it
    for module in (*(stage.module for stage in STAGES.values()), "rosd.reporting.tracking", "math_verify"):
        importlib.import_module(module)
    load_tokenizer(THETA0_DIR)
    load_model(THETA0_DIR)
    return fresh


def _import_architectures(argv: list[str]) -> None:
    """Import the modeling module of each model directory the command names (no weights read, no
    tensor made), so the fork finds it imported."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    for option, value in zip(argv, argv[1:]):
        if option in MODEL_OPTIONS and os.path.isfile(os.path.join(value, "config.json")):
            try:
                MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(value))]
            except Exception:  # the fork reports a bad model directory itself
                pass


def _run_fork(request: dict, fds: list[int], fresh: dict, worker_fds: list[int], run) -> None:
    """In the fork: become the job (its fds, directory, environment, threads) and run its command
    with ``run`` (the `rosd` command's main)."""
    code = 1
    try:
        from rosd.io import lifeline

        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, lambda *_: lifeline.stop("the job was killed"))
        lifeline.die_with_parent(os.getppid())  # the worker's end is the fork's too
        os.setpgid(0, 0)  # the worker kills the fork and whatever it starts as one group
        for fd in worker_fds:  # the listener and the commands' connections stay the worker's
            os.close(fd)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])  # the worker's name too: a block of rounds hands it each stage
        import torch

        threads = os.environ.get("OMP_NUM_THREADS", "")
        torch.set_num_threads(int(threads) if threads.isdigit() and int(threads) > 0 else fresh["threads"])
        torch.set_rng_state(fresh["rng"])
        import numpy

        numpy.random.seed()  # a fresh process's numpy state is its own, never a sibling's
        try:
            run(request["argv"])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            if isinstance(exit_.code, str):
                print(exit_.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
    except BaseException:  # before the command: becoming the job failed
        traceback.print_exc()
    finally:
        try:
            import logging

            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class _Job:
    def __init__(self, pid: int, conn: socket.socket):
        self.pid, self.conn = pid, conn
        self.killed_at: float | None = None


class _Refused(Exception):
    """A request the worker does not run: why, in one line for its log."""


class _Arriving:
    """A connection whose request is still arriving. `receive` takes what has come, never waiting
    for more, into a buffer that grows with what was sent (linear time, memory of the bytes sent)."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.deadline = time.monotonic() + REQUEST_TIMEOUT_SECONDS
        self.fds: list[int] = []
        self.header = b""
        self.body = bytearray()

    def receive(self) -> dict | None:
        """Read what the client has sent so far: the request once whole, else None. Raises
        `_Refused` for a request the worker does not run."""
        try:
            while len(self.header) < _LENGTH.size:
                data, fds, flags, _ = socket.recv_fds(self.conn, _LENGTH.size - len(self.header), _JOB_FDS)
                self.fds += fds
                if flags & socket.MSG_CTRUNC or len(self.fds) > _JOB_FDS:
                    raise _Refused(f"more than {_JOB_FDS} file descriptors sent")
                if not data:
                    raise _Refused("the client closed its connection before its request was whole")
                self.header += data
            (size,) = _LENGTH.unpack(self.header)
            if size > MAX_REQUEST_BYTES:
                raise _Refused(f"a request of {size} bytes announced, over the {MAX_REQUEST_BYTES}-byte limit")
            if len(self.fds) != _JOB_FDS:
                raise _Refused(f"{len(self.fds)} file descriptors sent, not {_JOB_FDS} (stdin, stdout, stderr)")
            while len(self.body) < size:
                data = self.conn.recv(min(_CHUNK, size - len(self.body)))
                if not data:
                    raise _Refused("the client closed its connection before its request was whole")
                self.body += data
        except BlockingIOError:  # the rest has not come yet
            return None
        except OSError as error:
            raise _Refused(f"its connection failed: {error}") from None
        return _checked_request(bytes(self.body))

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.conn.close()


def _checked_request(body: bytes) -> dict:
    """The request ``body`` holds, with the shape and types a job needs; else `_Refused`."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as error:  # RecursionError: nesting too deep for the decoder
        raise _Refused(f"not a JSON request ({type(error).__name__}: {error})") from None
    if not isinstance(request, dict) or set(request) != {"argv", "cwd", "env"}:
        raise _Refused("not a JSON object of exactly argv, cwd and env")
    argv, cwd, env = request["argv"], request["cwd"], request["env"]
    if not isinstance(argv, list) or not all(isinstance(arg, str) for arg in argv):
        raise _Refused("argv is not a list of strings")
    if not isinstance(cwd, str) or "\0" in cwd or not os.path.isdir(cwd):
        raise _Refused("cwd is not the path of a directory")
    if not isinstance(env, dict) or not all(
        isinstance(value, str) and "\0" not in name + value and name and "=" not in name for name, value in env.items()
    ):
        raise _Refused("env is not an object of variable names to strings")
    return request


def _peer_refusal(conn: socket.socket) -> str | None:
    """Why the process at the other end of ``conn`` may not run jobs here (another user's), or None.
    Only the worker's own user may: a job runs as the worker, with its files."""
    pid, uid, _ = _PEER.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEER.size))
    if uid != os.getuid():
        return f"from a process of uid {uid} (pid {pid}); the worker serves its own uid {os.getuid()} only"
    return None


def _log_refusal(reason: str) -> None:
    print(f"rosd worker: refused a request: {reason}", file=sys.stderr, flush=True)


def serve(path: str, run) -> NoReturn:
    """Listen on ``path`` until SIGTERM or until the process that started the worker is gone, then
    end the process; each request runs as ``run(argv)`` in a fork (``run`` is the `rosd` command's
    main, which starts the worker as ``rosd stage-worker SOCKET``)."""
    owner = os.getppid()
    fresh = warm_up()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    partial = f"{path}.{os.getpid()}.partial"
    listener.bind(partial)
    listener.listen(64)
    listener.setblocking(False)
    os.replace(partial, path)  # clients connect only once the worker is warm
    print(f"rosd worker (pid {os.getpid()}) ready on {path}", file=sys.stderr, flush=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    jobs: dict[int, _Job] = {}
    arriving: set[_Arriving] = set()

    def end_arrival(request: _Arriving, refusal: str | None) -> None:
        selector.unregister(request.conn)
        arriving.discard(request)
        if refusal is not None:
            _log_refusal(refusal)
            request.close()

    try:
        while not stopping and os.getppid() == owner:
            for key, _ in selector.select(TICK_SECONDS):
                if key.fileobj is listener:
                    if (request := _accept(listener, len(arriving))) is not None:
                        arriving.add(request)
                        selector.register(request.conn, selectors.EVENT_READ, request)
                elif isinstance(key.data, _Arriving):
                    try:
                        job_request = key.data.receive()
                    except _Refused as refusal:
                        end_arrival(key.data, str(refusal))
                        continue
                    if job_request is None:
                        continue
                    end_arrival(key.data, None)
                    _import_architectures(job_request["argv"])
                    worker_fds = [listener.fileno(), selector.fileno(), *(j.conn.fileno() for j in jobs.values())]
                    for other in arriving:
                        worker_fds += [other.conn.fileno(), *other.fds]
                    job = _fork_job(job_request, key.data, fresh, worker_fds, run)
                    jobs[job.pid] = job
                    selector.register(job.conn, selectors.EVENT_READ, job)
                else:  # a command's connection became readable: it closed, its job must stop
                    _stop(key.data)
            now = time.monotonic()
            for request in [r for r in arriving if now > r.deadline]:
                end_arrival(request, f"no whole request within {REQUEST_TIMEOUT_SECONDS:g} s of connecting")
            for job in list(jobs.values()):
                if _reap(job):
                    selector.unregister(job.conn)
                    job.conn.close()
                    del jobs[job.pid]
                elif job.killed_at is not None and time.monotonic() - job.killed_at > KILL_GRACE_SECONDS:
                    _signal_group(job.pid, signal.SIGKILL)
    finally:
        for job in jobs.values():
            _signal_group(job.pid, signal.SIGKILL)
        try:
            os.unlink(path)
        except OSError:
            pass
    sys.stderr.flush()
    os._exit(0)  # not the interpreter's teardown of torch and transformers: seconds that `stop` waits


def _accept(listener: socket.socket, arriving: int) -> _Arriving | None:
    """The connection waiting on ``listener``, its request still to read; None when there is none
    or it is refused (another user's, or ``arriving`` requests are already on their way)."""
    try:
        conn, _ = listener.accept()
    except OSError as error:  # gone before it was accepted, or no fd left
        if not isinstance(error, BlockingIOError):
            _log_refusal(f"its connection could not be accepted: {error}")
        return None
    refusal = _peer_refusal(conn)
    if refusal is None and arriving >= MAX_ARRIVING:
        refusal = f"{arriving} requests are arriving already, the most the worker reads at once"
    if refusal is not None:
        _log_refusal(refusal)
        conn.close()
        return None
    conn.setblocking(False)
    return _Arriving(conn)


def _fork_job(request: dict, arrived: _Arriving, fresh: dict, worker_fds: list[int], run) -> _Job:
    """Run ``request`` in a fork (``worker_fds``: the worker's own, which the fork closes); its
    command gets the fork's pid, and its exit status once it ends (`_reap`)."""
    conn, fds = arrived.conn, arrived.fds
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _run_fork(request, fds, fresh, [*worker_fds, conn.fileno()], run)
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(_PID.pack(pid))
    except OSError:  # the command is gone already: the loop stops the fork
        pass
    return _Job(pid, conn)


def _stop(job: _Job) -> None:
    if job.killed_at is None:
        job.killed_at = time.monotonic()
        _signal_group(job.pid, signal.SIGTERM)


def _reap(job: _Job) -> bool:
    """Whether the fork has ended; if it has, its command gets the exit status."""
    pid, status = os.waitpid(job.pid, os.WNOHANG)
    if pid == 0:
        return False
    code = os.waitstatus_to_exitcode(status)
    try:
        job.conn.setblocking(True)
        job.conn.sendall(_STATUS.pack(128 - code if code < 0 else code))
    except OSError:
        pass
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except OSError:
        pass


def start(log_path: str) -> subprocess.Popen:
    """Called by Snakemake's onstart: a worker of this Python, owned by this process, in a session
    of its own (a terminal's Ctrl-C reaches the jobs, which end their forks). Its socket is named
    in the environment the jobs inherit, in a fresh directory under the temporary one (a socket's
    path must stay short)."""
    path = os.path.join(tempfile.mkdtemp(prefix="rosd-worker-"), "socket")
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "rosd.cli", "stage-worker", path], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip
    os.environ[ENV] = path
    return process


def stop(process: subprocess.Popen) -> None:
    """Called by Snakemake's onsuccess and onerror: end the worker (and any fork left) and its socket."""
    os.environ.pop(ENV, None)
    process.terminate()
    try:
        process.wait(timeout=2 * KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    shutil.rmtree(os.path.dirname(process.args[-1]), ignore_errors=True)
