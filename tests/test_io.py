"""Atomic outputs: a failed write leaves the old file (or nothing), never part of a new one; each
attempt writes to a name of its own; dead attempts' leftovers are removed, live ones' never."""

import fcntl
import os
import signal
import subprocess
import sys

import pytest

from rosd.io.files import (
    HOST,
    InputFormatError,
    atomic_dir,
    atomic_path,
    read_json,
    read_jsonl,
    read_torch,
    remove_stale_partials,
    write_jsonl,
    write_torch,
)


def _partials(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path):
    target = tmp_path / "rows.jsonl"
    write_jsonl(target, [{"a": 1}])
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert read_jsonl(target) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_each_attempt_writes_to_its_own_name(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        assert first.name.startswith(f".out.txt.{HOST}.{os.getpid()}.") and first.name.endswith(".partial")
        first.write_text("first")
        second.write_text("second")
        assert _partials(tmp_path) == sorted([first.name, second.name])  # a live writer's partial is kept
    assert target.read_text() == "first"  # the last rename wins; neither was mixed into the other
    assert _partials(tmp_path) == []


@pytest.mark.pipeline
def test_leftovers_of_dead_attempts_are_removed(tmp_path):
    legacy = tmp_path / ".ckpt.partial"  # the fixed name of earlier versions
    legacy.mkdir()
    (legacy / "stale.bin").write_text("old")
    dead = tmp_path / f".ckpt.{HOST}.{_dead_pid()}.0badc0de.partial"
    dead.mkdir()
    (dead / "stale.bin").write_text("old")
    elsewhere = tmp_path / ".ckpt.otherhost.1.0badc0de.partial"  # another node's dead attempt: no lock held
    elsewhere.write_text("old")
    unrelated = tmp_path / ".ckpt.v2.partial"  # the legacy partial of another output, "ckpt.v2"
    unrelated.write_text("keep")
    with atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "model.bin").write_text("new")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.bin"]
    assert _partials(tmp_path) == [".ckpt.v2.partial"]


def test_partials_of_live_attempts_are_kept(tmp_path):
    target = tmp_path / "out.json"
    mine = tmp_path / f".out.json.{HOST}.{os.getpid()}.0badc0de.partial"  # a live pid on this host
    mine.write_text("writing")
    remote = tmp_path / ".out.json.otherhost.1.0badc0de.partial"  # another node's, its lock held
    remote.write_text("writing")
    fd = os.open(remote, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert remove_stale_partials(target) == []
        assert mine.exists() and remote.exists()
    finally:
        os.close(fd)
    assert remove_stale_partials(target) == [remote]  # its writer gone (lock released): removed
    assert mine.exists()


@pytest.mark.pipeline
def test_a_killed_attempt_leaves_nothing_for_long(tmp_path):
    target = tmp_path / "out.txt"
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom rosd.io.files import atomic_path\n"
         "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_text('half')\n    print('writing', flush=True)\n    time.sleep(60)\n",
         str(target)],
        stdout=subprocess.PIPE, text=True,
    )
    assert writer.stdout.readline() == "writing\n"
    assert len(_partials(tmp_path)) == 1
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert len(_partials(tmp_path)) == 1 and not target.exists()  # SIGKILL: no cleanup in the writer
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and _partials(tmp_path) == []


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2,\n')
    with pytest.raises(InputFormatError, match=rf"^{path}:3: not a JSON line: ") as error:
        read_jsonl(path)
    assert isinstance(error.value, ValueError) and error.value.line == 3 and "\n" not in str(error.value)
    path.write_bytes(b'{"a": 1}\n\xff\xfe\n')
    with pytest.raises(InputFormatError, match="not UTF-8"):
        read_jsonl(path)


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text('{\n  "a": 1,\n}\n')
    with pytest.raises(InputFormatError, match=rf"^{path}:3: not valid JSON"):
        read_json(path)



def test_write_torch_gives_the_same_bytes_whatever_the_partial_is_called(tmp_path):
    """torch.save to a path names the archive's folder after the file (a fresh partial name each
    attempt); through a file object the folder is always "archive"."""
    import zipfile

    import torch

    targets = {"targets": [{"support": torch.arange(6, dtype=torch.int32).reshape(2, 3), "teacher_logp": torch.ones(2, 4)}, None]}
    write_torch(tmp_path / "a" / "teacher.pt", targets)
    write_torch(tmp_path / "b" / "teacher.pt", targets)
    first = (tmp_path / "a" / "teacher.pt").read_bytes()
    assert first == (tmp_path / "b" / "teacher.pt").read_bytes()
    assert {name.split("/")[0] for name in zipfile.ZipFile(tmp_path / "a" / "teacher.pt").namelist()} == {"archive"}
    loaded = read_torch(tmp_path / "a" / "teacher.pt")
    assert torch.equal(loaded["targets"][0]["support"], targets["targets"][0]["support"]) and loaded["targets"][1] is None
