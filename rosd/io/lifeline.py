"""A stage process lives only as long as the Snakemake that started it.

Snakemake runs a job as ``bash -c "set -euo pipefail; rosd ..."`` in Snakemake's own process
group (bash often execs the last command, so `rosd` may be Snakemake's child or its bash's); when
Snakemake is SIGKILLed (or its node's scheduler kills it) nothing stops the jobs, and an orphan
would go on computing and could write its output under a rerun's feet. So at start the `rosd`
command looks up the nearest ancestor whose command line is Snakemake (the ppid chain in
``/proc/<pid>/stat``, the command in ``/proc/<pid>/cmdline``; Linux only: elsewhere, and
outside Snakemake, nothing happens) and a daemon thread checks every `POLL_SECONDS` that this
very process (same pid, same start time, not a zombie) is still there. When it is gone the
process says so in one line, removes what it was writing (`on_stop` callbacks: rosd.io.files's
partials), kills its own descendants (check workers, engine processes) and ends with
`EXIT_CODE` at once, wherever the main thread is. `check` does the same test on demand: rosd.io.files
calls it just before each atomic rename, so an output is never published after Snakemake died.

Where the direct parent is single-threaded (the job's bash), ``PR_SET_PDEATHSIG`` also has the
kernel send SIGTERM when that parent dies. It is not set under a multi-threaded parent
(Snakemake itself, a launcher): Linux sends it when the parent *thread* that forked exits, which a
thread pool's worker may do while the parent lives on.

``ROSD_LIFELINE=0`` turns all of this off.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

POLL_SECONDS = 1.0
EXIT_CODE = 3
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class _Proc:
    state: str
    ppid: int
    threads: int
    start_time: int


@dataclass(frozen=True)
class Ancestor:
    pid: int
    start_time: int


def _stat(pid: int) -> _Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()  # after "pid (comm) ": field 3 on
    return _Proc(state=fields[0].decode(), ppid=int(fields[1]), threads=int(fields[17]), start_time=int(fields[19]))


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def is_snakemake(argv: list[str]) -> bool:
    """``snakemake ...``, ``python .../snakemake ...`` (its console script) or ``python -m snakemake``."""
    if not argv:
        return False
    if os.path.basename(argv[0]) == "snakemake":
        return True
    if not os.path.basename(argv[0]).startswith(("python", "pypy")):
        return False
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-m":
            return argv[i + 1 : i + 2] == ["snakemake"]
        if arg == "-c" or not arg.startswith("-"):
            return arg != "-c" and os.path.basename(arg) == "snakemake"
        i += 2 if arg in ("-X", "-W", "--check-hash-based-pycs") else 1  # options with a separate value
    return False


def find_snakemake(pid: int | None = None) -> Ancestor | None:
    """The nearest ancestor of ``pid`` (default: this process) that is Snakemake, if any."""
    proc = _stat(os.getpid() if pid is None else pid)
    for _ in range(256):
        if proc is None or proc.ppid <= 1:
            return None
        pid = proc.ppid
        proc = _stat(pid)
        if proc is not None and is_snakemake(_cmdline(pid)):
            return Ancestor(pid, proc.start_time)
    return None


def alive(ancestor: Ancestor) -> bool:
    proc = _stat(ancestor.pid)
    return proc is not None and proc.start_time == ancestor.start_time and proc.state not in ("Z", "X", "x")


_watched: Ancestor | None = None
_label = "rosd"
_report: Callable[[str], None] | None = None
_callbacks: list[Callable[[], None]] = []
_stopping = threading.Lock()


def on_stop(callback: Callable[[], None]) -> None:
    """Run ``callback`` (it must be quick) when the lifeline stops this process."""
    _callbacks.append(callback)


def _write_stderr(line: str) -> None:
    try:
        os.write(2, (line + "\n").encode())
    except OSError:
        pass


def _descendants() -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (proc := _stat(int(entry))) is not None:
            children.setdefault(proc.ppid, []).append(int(entry))
    found, queue = [], [os.getpid()]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def stop(reason: str) -> None:
    """Say why, run the `on_stop` callbacks, kill this process's descendants and exit now."""
    _stopping.acquire()  # the first caller stops the process; any other waits for that
    try:
        (_report or _write_stderr)(f"{_label}: stopping: {reason}")
        for callback in _callbacks:
            try:
                callback()
            except Exception:
                pass
        try:
            for pid in _descendants():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        except OSError:
            pass
    finally:
        os._exit(EXIT_CODE)


def _gone_reason() -> str | None:
    if _watched is not None and not alive(_watched):
        return f"the snakemake that started this job (pid {_watched.pid}) is gone; nothing written"
    return None


def check() -> None:
    """Stop this process now if the Snakemake it runs under is gone (a no-op without a lifeline)."""
    if (reason := _gone_reason()) is not None:
        stop(reason)


def _poll(interval: float) -> None:
    while True:
        time.sleep(interval)
        check()


def _set_parent_death_signal(parent: int) -> bool:
    proc = _stat(parent)
    if proc is None or proc.threads != 1:
        return False
    return die_with_parent(parent)


def die_with_parent(parent: int) -> bool:
    """Have the kernel send this process SIGTERM when ``parent`` (the thread that forked it) exits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # it died before the call: the signal will never come
        os.kill(os.getpid(), signal.SIGTERM)
    return True


ENV = "ROSD_SNAKEMAKE"


def export_for_jobs() -> None:
    """Called by the Snakefile: name this Snakemake process (pid and start time) in the environment
    its jobs inherit, so a job that starts after Snakemake already died (and was re-parented, its
    ancestry lost) still knows whom it belonged to."""
    proc = _stat(os.getpid()) if sys.platform.startswith("linux") else None
    if proc is not None:
        os.environ[ENV] = f"{os.getpid()}:{proc.start_time}"


def _exported() -> Ancestor | None:
    try:
        pid, start_time = map(int, os.environ[ENV].split(":"))
    except (KeyError, ValueError):
        return None
    return Ancestor(pid, start_time)


def start(label: str = "rosd", report: Callable[[str], None] | None = None, poll: float = POLL_SECONDS) -> Ancestor | None:
    """Watch the Snakemake this process runs under; returns it, or None when there is none (not
    Linux, not under Snakemake, ``ROSD_LIFELINE=0``). Once per process."""
    global _watched, _label, _report
    if _watched is not None or os.environ.get("ROSD_LIFELINE", "1") == "0" or not sys.platform.startswith("linux"):
        return _watched
    ancestor = find_snakemake() or _exported()
    if ancestor is None:
        return None
    _watched, _label, _report = ancestor, label, report
    check()  # it may be gone already: a job started just before Snakemake was killed
    _set_parent_death_signal(os.getppid())
    threading.Thread(target=_poll, args=(poll,), name="rosd-lifeline", daemon=True).start()
    return ancestor
