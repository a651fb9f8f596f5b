"""Atomic outputs: a failed write leaves the old file (or nothing), never part of a new one."""

import pytest

from rosd.io import atomic_dir, atomic_path, read_jsonl, write_jsonl


def test_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path):
    target = tmp_path / "rows.jsonl"
    write_jsonl(target, [{"a": 1}])
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert read_jsonl(target) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_leftover_of_a_killed_attempt_is_replaced(tmp_path):
    (tmp_path / ".ckpt.partial").mkdir()
    (tmp_path / ".ckpt.partial" / "stale.bin").write_text("old")
    with atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "model.bin").write_text("new")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.bin"]
    assert not (tmp_path / ".ckpt.partial").exists()
