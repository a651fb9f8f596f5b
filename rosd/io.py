"""Atomic file output: every stage writes to a temporary name and renames, so a crash leaves
either the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path


def _partial(path: Path) -> Path:
    """The temporary name of ``path`` while it is written. Fixed, so that what a killed attempt
    left behind is removed by the next attempt instead of piling up."""
    return path.with_name(f".{path.name}.partial")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(path)
    _remove(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        _remove(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Like `atomic_path`, for a directory (a checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(path)
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        _remove(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text())


def write_jsonl(path, rows) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def read_jsonl(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
