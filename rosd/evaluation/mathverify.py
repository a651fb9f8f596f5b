"""Math answer equivalence by math-verify, in worker processes with a deadline (docs/method.md, "Verifiers").

math-verify bounds its own parsing and comparison with ``signal.alarm``, which works only in a
process's main thread, and some inputs (a huge power tower, a factorial of a power) make sympy spin
for as long as one lets it. So every check runs in a worker *process* (``python -m
rosd.evaluation.mathverify``, one JSON request per line on stdin, one JSON verdict per line on stdout): inside
it, math-verify's own timeouts stop most slow checks cheaply; a check that still overruns the outer
deadline (stuck in C code), or whose worker dies, has that worker killed and replaced and costs
only its own sample (False), never the run.

Workers are plain subprocesses rather than a multiprocessing pool: they never re-import the
caller's ``__main__`` and each one can be killed alone. One set per process is started on first
use and reused (starting a worker and importing math-verify takes about a second; a check then
costs about a millisecond of IPC), so stages can grade per sample or a whole batch at once. In a
process that has math-verify imported already (a fork of the stage worker, rosd/jobs/worker.py) a
worker is a fork of it instead, which starts in milliseconds.
"""

from __future__ import annotations

import atexit
import collections
import importlib.util
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

DEFAULT_TIMEOUT = 5.0  # seconds per math-verify phase (math-verify's own default)
STARTUP_TIMEOUT = 120.0  # seconds for a worker to import math-verify (generous: shared machines)
READY = "ready"  # a worker's first line, once it can take requests
WORKER_COMMAND = [sys.executable, "-m", "rosd.evaluation.mathverify"]


def equivalent(gold: str, predicted: str, timeout: float = DEFAULT_TIMEOUT, *, rebox: bool = True) -> bool | None:
    """math-verify's verdict on two answer strings: True or False, or None when it is not
    equivalent and one of math-verify's timed phases ran out of time. Runs in a worker process
    (math-verify's timeouts are signals).

    ``rebox`` wraps each string in ``\\boxed{}`` first, so that math-verify reads it as LaTeX, as it
    reads a model's answer (the lenient grading); ``rebox=False`` hands over the bare strings, as the
    reference verifier does (some bare LaTeX, e.g. ``\\dfrac{\\sqrt{3}}{2}``, then parses to nothing).
    """
    from math_verify import parse, verify

    seconds = max(1, round(timeout))  # math-verify's alarm takes whole seconds
    if rebox:
        gold, predicted = f"\\boxed{{{gold}}}", f"\\boxed{{{predicted}}}"
    # math-verify swallows its own timeouts (it logs a warning and reads the phase as failed):
    # watch its log to tell a timeout from a plain "not equivalent".
    watch = _TimeoutWatch()
    logging.getLogger("math_verify").addHandler(watch)
    try:
        gold_parsed = parse(gold, parsing_timeout=seconds)
        predicted_parsed = parse(predicted, parsing_timeout=seconds)
        same = bool(verify(gold_parsed, predicted_parsed, timeout_seconds=seconds))
    finally:
        logging.getLogger("math_verify").removeHandler(watch)
    return None if watch.seen and not same else same


class _TimeoutWatch(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen = False

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Timeout"):
            self.seen = True


class _Worker:
    def __init__(self, command: list[str]):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.stdout = self.process.stdout

    def send(self, request) -> None:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


class _ForkedWorker:
    """A worker forked from this process, which has math-verify imported: no interpreter to start,
    nothing to import. It keeps only its two pipes (a sibling's pipe it held would keep that
    sibling from seeing its end of input)."""

    def __init__(self):
        request_read, request_write = os.pipe()
        answer_read, answer_write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):  # not the caller's handlers (rosd.io.lifeline's)
                    signal.signal(sig, signal.SIG_DFL)
                os.dup2(request_read, 0)
                os.dup2(answer_write, 1)
                os.closerange(3, os.sysconf("SC_OPEN_MAX"))
                sys.stdin, sys.stdout = open(0, encoding="utf-8"), open(1, "w", encoding="utf-8")
                _serve()
            finally:
                os._exit(0)
        os.close(request_read)
        os.close(answer_write)
        self.stdin = open(request_write, "w", encoding="utf-8", buffering=1)
        self.stdout = open(answer_read, encoding="utf-8")

    def send(self, request) -> None:
        self.stdin.write(json.dumps(request) + "\n")
        self.stdin.flush()

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except OSError:
            pass
        self.stdin.close()
        self.stdout.close()


def _readable(workers, timeout: float) -> list:
    ready, _, _ = select.select([w.stdout for w in workers], [], [], max(0.0, timeout))
    return [w for w in workers if w.stdout in ready]


class CheckPool:
    """Line-protocol worker processes, each request with a deadline.

    ``command`` starts a worker that prints READY, then answers each JSON request line with one
    JSON line. At most one request per worker is in flight, so a request starts when it is sent and
    its deadline is measured from then. A result is the worker's answer, or None when the request
    overran the deadline or the worker died.
    """

    def __init__(self, command: list[str] | None = None, workers: int | None = None):
        self.command = command or WORKER_COMMAND
        self.workers = workers or max(1, min(4, len(os.sched_getaffinity(0))))
        self._idle: list[_Worker] = []

    def _start(self, count: int) -> list[_Worker]:
        forked = self.command == WORKER_COMMAND and "math_verify" in sys.modules and hasattr(os, "fork")
        started = [_ForkedWorker() if forked else _Worker(self.command) for _ in range(count)]
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for worker in started:
            ready = _readable([worker], deadline - time.monotonic())
            if not ready or worker.stdout.readline().strip() != READY:
                for w in started:
                    w.kill()
                raise RuntimeError(f"a check worker did not start: {' '.join(self.command)}")
        return started

    def close(self) -> None:
        for worker in self._idle:
            worker.kill()
        self._idle = []

    def run(self, requests: Sequence, deadline: float) -> list:
        results: list = [None] * len(requests)
        waiting = collections.deque(range(len(requests)))
        busy: dict[_Worker, tuple[int, float]] = {}  # worker -> (request index, send time)
        idle = self._idle
        while waiting or busy:
            wanted = min(self.workers, len(waiting) + len(busy))
            if waiting and len(idle) + len(busy) < wanted:
                idle.extend(self._start(wanted - len(idle) - len(busy)))
            while waiting and idle:
                worker, index = idle.pop(), waiting.popleft()
                try:
                    worker.send(requests[index])
                except BrokenPipeError:  # it died while idle: replace it, retry the request
                    worker.kill()
                    waiting.appendleft(index)
                    continue
                busy[worker] = (index, time.monotonic())
            if not busy:
                continue
            oldest = min(sent for _, sent in busy.values())
            answered = _readable(busy, oldest + deadline - time.monotonic())
            # A worker whose deadline passed gets a last look, in case its answer is already there.
            overdue = [w for w, (_, sent) in busy.items() if time.monotonic() - sent >= deadline and w not in answered]
            answered += _readable(overdue, 0.0) if overdue else []
            for worker in set(answered):
                index, _ = busy.pop(worker)
                try:
                    results[index] = json.loads(worker.stdout.readline())
                    idle.append(worker)
                except ValueError:  # it died mid-request (EOF), or wrote something not an answer
                    worker.kill()
            for worker in [w for w in overdue if w in busy]:
                busy.pop(worker)
                worker.kill()  # stuck: its request stays None, a fresh worker replaces it
        self._idle = idle
        return results


_shared: CheckPool | None = None


def _shared_pool() -> CheckPool:
    global _shared
    if _shared is None:
        if importlib.util.find_spec("math_verify") is None:
            raise ImportError("math answers need math-verify: pip install math-verify")
        _shared = CheckPool()
        atexit.register(_shared.close)
    return _shared


def check_many(
    pairs: Sequence[tuple[str, str]], timeout: float = DEFAULT_TIMEOUT, *, rebox: bool = True
) -> list[bool | None]:
    """math-verify's verdict for each (gold, predicted) pair, or None for a check that timed out
    (math-verify's own timeout, or the outer deadline) or whose worker crashed.

    The outer deadline covers math-verify's three timed phases (two parses, one comparison) plus
    a second of slack, so it fires only when math-verify's own timeouts could not. ``rebox``: see
    `equivalent`.
    """
    if not pairs:
        return []
    requests = [[gold, predicted, timeout, rebox] for gold, predicted in pairs]
    return _shared_pool().run(requests, deadline=3 * timeout + 1.0)


def equivalent_many(
    pairs: Sequence[tuple[str, str]], timeout: float = DEFAULT_TIMEOUT, *, rebox: bool = True
) -> list[bool]:
    """`check_many` with a check that hung, timed out or crashed read as False."""
    return [bool(r) for r in check_many(pairs, timeout, rebox=rebox)]


def _serve() -> None:
    """Worker loop: [gold, predicted, timeout(, rebox)] per line in, the verdict per line out
    (true, false, or null when math-verify's own timeout fired)."""
    protocol, sys.stdout = sys.stdout, sys.stderr  # nothing but answers may reach the protocol stream
    import math_verify  # noqa: F401  (imported before READY, so no request's deadline pays for it)

    print(READY, file=protocol, flush=True)
    for line in sys.stdin:
        gold, predicted, timeout, *rest = json.loads(line)
        try:
            verdict = equivalent(gold, predicted, timeout, rebox=bool(rest[0]) if rest else True)
        except Exception:  # noqa: BLE001  (never let one input stop the worker)
            verdict = False
        print(json.dumps(verdict), file=protocol, flush=True)


if __name__ == "__main__":
    _serve()
