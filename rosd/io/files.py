"""Atomic file output: every stage writes to a temporary name and renames, so a crash leaves
either the old file or the new one, never half of one.

Each attempt writes to a name of its own, ``.NAME.<host>.<pid>.<random>.partial`` beside NAME, so
two writers of the same output (a job that outlived its Snakemake and the rerun's job) never
write into one file. The attempt holds an exclusive ``flock`` on its partial while it writes; the
kernel drops that lock however the process ends, a SIGKILL included. Before writing, an attempt
removes the partials of NAME that dead attempts left: those whose lock nobody holds and, when
they come from this host, whose pid is not alive (the pid check covers the instant between a
partial's creation and its lock, and filesystems without locks). A live writer's partial is
never touched, and what a killed attempt leaves is removed by the next attempt of the same
output, so leftovers do not pile up.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import re
import secrets
import shutil
import socket
import threading
from pathlib import Path

from rosd.io import lifeline


class InputFormatError(ValueError):
    """A file a stage reads is malformed; the message names it (and the line): ``path:line: ...``."""

    def __init__(self, path, line: int | None, problem: str):
        self.path, self.line, self.problem = str(path), line, problem
        super().__init__(f"{path}:{line}: {problem}" if line else f"{path}: {problem}")


class CorruptOutputError(InputFormatError):
    """A file the pipeline wrote itself is truncated or corrupted: the message names it and the
    command that writes it again. ``rerun`` is the output Snakemake knows (the checkpoint
    directory of a file inside one); by default the file itself."""

    def __init__(self, path, line: int | None, problem: str, rerun=None):
        super().__init__(path, line, f"{problem}; rerun the job that wrote it: snakemake --cores all --forcerun {rerun or path}")


class DiskFullError(OSError):
    """A write ran out of disk space (or quota); the message names the file being written."""

    def __init__(self, path, reason: str):
        super().__init__(f"disk full ({reason}) while writing {path}: free some space and rerun")


# Below this much free space a failed write counts as a full disk even without ENOSPC: torch.save
# writing to a path reports it as "unexpected pos ..." with no errno.
_NEARLY_FULL_BYTES = 1 << 20


HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:32] or "host"
_ATTEMPT = re.compile(r"(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]+)")
_SUFFIX = ".partial"

# This process's partials being written, removed if the lifeline stops the process mid-write.
_active: set[Path] = set()
_active_lock = threading.Lock()


def _partial(path: Path) -> Path:
    """A fresh temporary name for one attempt at writing ``path``."""
    return path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}{_SUFFIX}")


def _attempt(path: Path, candidate: Path) -> tuple[str, int] | None:
    """(host, pid) of a partial of ``path``, None for any other name."""
    prefix = f".{path.name}."
    name = candidate.name
    if not (name.startswith(prefix) and name.endswith(_SUFFIX)):
        return None
    match = _ATTEMPT.fullmatch(name[len(prefix) : -len(_SUFFIX)])
    return (match["host"], int(match["pid"])) if match else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            path.unlink()


def _unlocked(candidate: Path) -> bool:
    """Whether no process holds the lock of a partial (False when that cannot be told)."""
    try:
        fd = os.open(candidate, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:  # held by a live attempt, or a filesystem without locks
        return False
    finally:
        os.close(fd)


def remove_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Remove what dead attempts at writing ``path`` left beside it; returns what was removed."""
    path = Path(path)
    removed = []
    # A partial under the plain name, without an attempt id: results directories written by
    # versions of rosd without per-attempt names may still hold one.
    legacy = path.with_name(f".{path.name}{_SUFFIX}")
    if legacy.exists() or legacy.is_symlink():
        _remove(legacy)
        removed.append(legacy)
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*{_SUFFIX}"):
        attempt = _attempt(path, candidate)
        if attempt is None:
            continue
        host, pid = attempt
        if host == HOST and _pid_alive(pid):
            continue
        if _unlocked(candidate):
            _remove(candidate)
            removed.append(candidate)
    return removed


def _claim(path: Path, directory: bool) -> tuple[Path, int]:
    """Create this attempt's partial (file or directory) and lock it; (its path, the lock's fd)."""
    while True:
        tmp = _partial(path)
        try:
            if directory:
                os.mkdir(tmp)
                fd = os.open(tmp, os.O_RDONLY)
            else:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        with contextlib.suppress(OSError):  # no locks on this filesystem: the pid check remains
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with _active_lock:
            _active.add(tmp)
        return tmp, fd


def _release(tmp: Path, fd: int) -> None:
    with _active_lock:
        _active.discard(tmp)
    _remove(tmp)  # nothing left if the rename happened
    os.close(fd)


def _disk_full(error: BaseException, partial: Path) -> str | None:
    """Why ``error``, raised while writing ``partial``, means the disk is full; None otherwise."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return os.strerror(error.errno)
    if isinstance(error, RuntimeError):
        with contextlib.suppress(OSError):
            space = os.statvfs(partial.parent)
            if space.f_bavail * space.f_frsize < _NEARLY_FULL_BYTES:
                return os.strerror(errno.ENOSPC)
    return None


def _abandon() -> None:
    """Remove this process's partials (the lifeline stops the process mid-write)."""
    with _active_lock:
        for tmp in list(_active):
            _remove(tmp)


lifeline.on_stop(_abandon)


@contextlib.contextmanager
def _disk_full_named(path: Path, tmp: Path):
    """A write into ``tmp`` that fails for want of space is a `DiskFullError` naming ``path``."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        if reason := _disk_full(error, tmp):
            raise DiskFullError(path, reason) from None
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path`` (an empty file); rename it onto ``path`` only if the
    block succeeds and the Snakemake that started this process (if any) is still there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp, fd = _claim(path, directory=False)
    try:
        with _disk_full_named(path, tmp):
            yield tmp
            lifeline.check()
            os.replace(tmp, path)
    finally:
        _release(tmp, fd)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Like `atomic_path`, for a directory (a checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp, fd = _claim(path, directory=True)
    try:
        with _disk_full_named(path, tmp):
            yield tmp
            lifeline.check()
            _remove(path)
            os.replace(tmp, path)
    finally:
        _release(tmp, fd)


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputFormatError(path, None, "not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise InputFormatError(path, error.lineno, f"not valid JSON: {error.msg} (column {error.colno})") from None


def jsonl_line(path, position: int) -> int | None:
    """The line number (from 1) of row ``position`` (from 0) of a JSON Lines file, whose readers
    skip blank lines; None past its last row."""
    nonblank = 0
    for lineno, line in enumerate(Path(path).read_bytes().split(b"\n"), 1):
        if line.strip():
            if nonblank == position:
                return lineno
            nonblank += 1
    return None


def read_output(path):
    """A JSON (``.json``) or JSON-lines (``.jsonl``) file a stage wrote; a malformed one is a
    `CorruptOutputError`."""
    try:
        return read_jsonl(path) if str(path).endswith(".jsonl") else read_json(path)
    except InputFormatError as error:
        raise CorruptOutputError(path, error.line, error.problem) from None


def write_torch(path, obj) -> None:
    """``torch.save`` atomically, the same bytes for the same object: saved through a file object,
    so the archive's inner folder is torch's fixed "archive", not the temporary file's name."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def read_torch(path, rerun=None):
    """``torch.load`` (tensors and plain containers only) of a file a stage wrote; a truncated or
    corrupted one is a `CorruptOutputError`, not torch's traceback. ``rerun``: the output that
    holds the file, where that is a directory (a checkpoint's trainer state)."""
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as error:
        reason = str(error).splitlines()[0].split(". ")[0] if str(error).strip() else "ends early"
        raise CorruptOutputError(path, None, f"truncated or corrupted ({reason})", rerun) from None


def write_jsonl(path, rows) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def read_jsonl(path) -> list[dict]:
    """The rows of a JSON-lines file (blank lines skipped); a malformed line raises
    `InputFormatError` naming ``path:line``."""
    rows = []
    number = 0
    with open(path, encoding="utf-8") as f:
        try:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise InputFormatError(path, number, f"not a JSON line: {error.msg} (column {error.colno})") from None
        except UnicodeDecodeError:
            raise InputFormatError(path, number + 1, "not UTF-8 text") from None
    return rows
