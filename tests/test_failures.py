"""Failures a user causes or meets, on hand-built files, in process: a truncated or corrupted output
of an earlier job, a full disk, a foreign or locked MLflow store. Each is one line on stderr, exit 2,
no traceback, and nothing written beside what was there (issue 25, item 4)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from one_line import refused_in_one_line
from test_aggregate_tracking import CONFIG, make_experiment

from rosd.io.files import DiskFullError, atomic_dir, atomic_path, write_torch
from rosd.reporting import tracking
from rosd.reporting.aggregate import write_tables

RERUN = "rerun the job that wrote it: snakemake --cores all --forcerun"
DISTILL_SETTINGS = json.dumps({"seed": 0, "round": 1, "method": {"objective": "distill"}, "train": {"rollouts_per_prompt": 1}})


@pytest.fixture
def round_files(tmp_path):
    """A round's distill inputs: a model directory, one distilled rollout, its teacher.pt."""
    (tmp_path / "model").mkdir()
    task = {"id": "t0", "kind": "math", "prompt": "1+1?", "answer": "2"}
    row = {"group": 0, "sample": 0, "task": task, "prompt_ids": [1], "response_ids": [2, 3, 4], "response": "2", "reward": 1.0}
    (tmp_path / "reflections.jsonl").write_text(json.dumps({**row, "distilled": True, "in_loss": True, "step": 0}) + "\n")
    write_torch(tmp_path / "teacher.pt", {"targets": [{"support": None, "teacher_logp": torch.zeros(3)}]})
    return tmp_path


def _distill(d: Path) -> list[str]:
    return ["distill", "--model", f"{d}/model", "--reflections", f"{d}/reflections.jsonl", "--teacher-scores", f"{d}/teacher.pt",
            "--out-model", f"{d}/checkpoint", "--out-metrics", f"{d}/metrics.json", "--settings", DISTILL_SETTINGS]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "damage", "problem"),
    [
        ("truncated", lambda data: data[: len(data) // 2], "truncated or corrupted (PytorchStreamReader failed reading zip archive: failed finding central directory)"),
        ("empty", lambda data: b"", "truncated or corrupted (ends early)"),
        ("garbage", lambda data: b"not a torch file" * 10, "truncated or corrupted (Weights only load failed)"),
    ],
)
def test_corrupted_teacher_scores_name_the_file_and_the_rerun(case, damage, problem, round_files, capsys):
    teacher = round_files / "teacher.pt"
    teacher.write_bytes(damage(teacher.read_bytes()))
    line = refused_in_one_line(_distill(round_files), capsys, round_files)
    assert line == f"rosd distill: error: {teacher}: {problem}; {RERUN} {teacher}"


def test_teacher_scores_of_other_rollouts_name_both_files(round_files, capsys):
    write_torch(round_files / "teacher.pt", {"targets": []})
    line = refused_in_one_line(_distill(round_files), capsys, round_files)
    teacher, reflections = round_files / "teacher.pt", round_files / "reflections.jsonl"
    assert line == f"rosd distill: error: {teacher}: holds 0 teacher targets, {reflections} has 1 distilled rollouts; {RERUN} {teacher}"


@pytest.fixture
def tabled(tmp_path):
    """An experiment with its tables written: a failed aggregate must leave them as they are."""
    exp = make_experiment(tmp_path / "results" / "demo")
    write_tables(exp, exp / "tables")
    return exp


METRICS = "runs/rosd/math/seed0/round2/metrics.json"
SUMMARY = "eval/sdpo/math/seed1/round2/mcq.json"
RECORDS = "eval/base/all/seed0/round0/math.jsonl"


@pytest.mark.parametrize(
    ("case", "name", "content", "problem"),
    [
        ("truncated metrics", METRICS, '{"method": "rosd", "loss": 0.', "{path}:1: not valid JSON: Expecting ',' delimiter (column 29)"),
        ("empty metrics", METRICS, "", "{path}:1: not valid JSON: Expecting value (column 1)"),
        ("metrics not an object", METRICS, "[1]", "{path}: not a JSON object but list"),
        ("metrics not UTF-8", METRICS, b'{"loss": "\xff"}', "{path}: not UTF-8 text"),
        ("truncated summary", SUMMARY, '{"mean_at_k": 0.2', "{path}:1: not valid JSON: Expecting ',' delimiter (column 18)"),
        ("truncated records", RECORDS, '{"id": "p0", "sample": 0, "correct": 1}\n{"id": "p0", "sam', "{path}:2: not a JSON line: Unterminated string starting at (column 14)"),
    ],
)
def test_a_bad_input_of_aggregate_leaves_the_previous_tables(case, name, content, problem, tabled, capsys):
    path = tabled / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    line = refused_in_one_line(["aggregate", "--exp-dir", str(tabled), "--out-dir", str(tabled / "tables")], capsys, tabled.parent.parent)
    assert line == f"rosd aggregate: error: {problem.format(path=path)}; {RERUN} {path}"


def test_disk_full_while_writing_a_table_names_the_table(tabled, capsys, monkeypatch):
    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", no_space)
    line = refused_in_one_line(["aggregate", "--exp-dir", str(tabled), "--out-dir", str(tabled / "tables")], capsys, tabled.parent.parent)
    assert line == f"rosd aggregate: error: disk full (No space left on device) while writing {tabled / 'tables' / 'rounds.csv'}: free some space and rerun"


def test_disk_full_inside_torch_save_names_the_file(tmp_path):
    target = tmp_path / "teacher.pt"
    with pytest.raises(DiskFullError) as error:
        with atomic_path(target), open("/dev/full", "wb") as full:  # a device whose every write is ENOSPC
            torch.save({"targets": [torch.zeros(1000)]}, full)
    assert str(error.value) == f"disk full (No space left on device) while writing {target}: free some space and rerun"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("free_blocks", "full"), [(0, True), (1 << 30, False)])
def test_a_write_error_without_errno_is_a_full_disk_only_on_a_full_disk(free_blocks, full, tmp_path, monkeypatch):
    """torch.save to a path reports ENOSPC as "unexpected pos ..." with no errno: the free space decides."""
    real = os.statvfs(tmp_path)
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result((real.f_bsize, 4096, 1 << 31, free_blocks, free_blocks, 0, 0, 0, 0, 255)))
    expected = DiskFullError if full else RuntimeError
    with pytest.raises(expected) as error:
        with atomic_dir(tmp_path / "checkpoint"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
    if full:
        assert str(error.value) == f"disk full (No space left on device) while writing {tmp_path / 'checkpoint'}: free some space and rerun"
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    """An experiment with its MLflow store, ingested once (a store takes seconds to create)."""
    exp = make_experiment(tmp_path_factory.mktemp("store") / "results" / "demo")
    tracking.ingest(str(exp), "demo", CONFIG)
    return exp


@pytest.fixture
def store(ingested, tmp_path, monkeypatch):
    """A copy of the ingested experiment of the test's own, and short waits for a locked store."""
    exp = tmp_path / "results" / "demo"
    shutil.copytree(ingested, exp)
    monkeypatch.setattr(tracking, "LOCK_WAIT_S", 1)
    monkeypatch.setattr(tracking, "BUSY_TIMEOUT_S", 0.2)
    return exp


def _compare(exp: Path) -> list[str]:
    return ["compare", "--results", str(exp.parent), "--experiment", exp.name]


REMEDY = "move it aside and rerun the track job: snakemake --cores all --forcerun track"


@pytest.mark.parametrize(
    ("case", "content", "problem"),
    [
        ("empty file", b"", "an empty file, not an MLflow store"),
        ("garbage", b"\x00garbage\x7f" * 400, "not an SQLite database, so not an MLflow store"),
        ("truncated SQLite", None, "an unreadable SQLite database (database disk image is malformed)"),
        ("foreign SQLite", "foreign", "an SQLite database without MLflow's tables, not an MLflow store"),
    ],
)
def test_compare_refuses_what_is_not_an_mlflow_store_and_leaves_it_alone(case, content, problem, store, capsys):
    db = store / "mlflow.db"
    if content is None:
        db.write_bytes(db.read_bytes()[:100] + b"\xff" * 4000)
    elif content == "foreign":
        db.unlink()
        with sqlite3.connect(db) as foreign:
            foreign.execute("CREATE TABLE notes (text)")
        foreign.close()
    else:
        db.write_bytes(content)
    line = refused_in_one_line(_compare(store), capsys, store)
    assert line == f"rosd compare: error: {db}: {problem}; {REMEDY}"


def test_track_refuses_a_store_that_is_not_one(store, capsys):
    db = store / "mlflow.db"
    db.write_bytes(b"\x00garbage\x7f" * 400)
    line = refused_in_one_line(["track", "--exp-dir", str(store), "--config", "{}", "--out", str(store / "ingested.json")], capsys, store)
    assert line == f"rosd track: error: {db}: not an SQLite database, so not an MLflow store; {REMEDY}"


def _hold_lock(db: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(db, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def test_a_store_locked_too_long_is_one_line_after_a_bounded_wait(store, capsys):
    holder = _hold_lock(store / "mlflow.db")
    try:
        started = time.monotonic()
        line = refused_in_one_line(_compare(store), capsys, store)
        waited = time.monotonic() - started
    finally:
        holder.close()
    # this test's own connection holds it, and a process does not list itself
    assert line == f"rosd compare: error: {store / 'mlflow.db'}: the MLflow store stayed locked for 1 s (open in no process this user can see): close what holds it and rerun"
    assert 1 <= waited < 10


def test_ingest_waits_for_a_lock_that_is_released(store, monkeypatch):
    monkeypatch.setattr(tracking, "LOCK_WAIT_S", 30)
    holder = _hold_lock(store / "mlflow.db")
    threading.Timer(1.5, holder.rollback).start()
    started = time.monotonic()
    try:
        assert tracking.ingest(str(store), "demo", CONFIG) == 6  # every parent kept: unchanged inputs
    finally:
        holder.close()
    assert time.monotonic() - started >= 1.5


HOLD = """
import sqlite3, sys, time
holder = sqlite3.connect(sys.argv[1])
holder.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(60)
"""


@pytest.mark.pipeline
def test_a_locked_store_names_the_process_that_holds_it(store, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(store / "mlflow.db")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        line = refused_in_one_line(_compare(store), capsys, store)
    finally:
        holder.kill()
        holder.wait()
    assert line.startswith(f"rosd compare: error: {store / 'mlflow.db'}: the MLflow store stayed locked for 1 s (open in pid {holder.pid} (")
    assert line.endswith("): close what holds it and rerun")
