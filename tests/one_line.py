"""Running the `rosd` command in process on bad input, as the tests of one-line errors do."""

from __future__ import annotations

from pathlib import Path

import pytest

from rosd import cli


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"" for p in sorted(root.rglob("*"))}


def refused_in_one_line(argv: list[str], capsys, root: Path) -> str:
    """Run ``rosd argv`` in process and return its one line: exit 2, one line on stderr (log lines
    of INFO aside), no traceback, and every file and folder under ``root`` as it was."""
    before = _snapshot(root)
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and " INFO " not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert _snapshot(root) == before
    return lines[0]
