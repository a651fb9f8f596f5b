"""The world's path oracle: which orders of a task's steps are valid solutions, which path a
response is on, and where it first leaves every valid path.

A task's ``steps`` are its solution lines on one canonical path (the reference solution), and
``after[i]`` lists the steps that step ``i`` needs first (its operands). Any order that respects
``after`` is a valid path (a sum may also be written with its terms swapped); a chain
(``after[i] == [i - 1]``) has exactly one order. A response is read
line by line: each line must be one of the steps whose prerequisites it has already written, and
the first line that is not is its first error, on its own path.
"""

from __future__ import annotations

import re


def _lines_with_offsets(text: str):
    """(offset of the first non-blank character, stripped line) for each non-blank line."""
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.strip():
            yield offset + len(line) - len(line.lstrip()), line.strip()
        offset += len(line)


_SUM = re.compile(r"(\d+) \+ (\d+) = (\d+)")


def _writes(line: str, step: str) -> bool:
    """Whether ``line`` writes ``step``: its text, or a sum with its two terms swapped (as valid)."""
    if line == step:
        return True
    swapped = _SUM.fullmatch(step)
    return swapped is not None and line == f"{swapped[2]} + {swapped[1]} = {swapped[3]}"


def chain(steps: int) -> list[list[int]]:
    """``after`` of a chain of ``steps`` steps: each after the one before."""
    return [[i - 1] if i else [] for i in range(steps)]


def prerequisites(task: dict) -> list[list[int]]:
    """``after`` of a task, or a chain's when it has none."""
    return task.get("after") or chain(len(task["steps"]))


def _ready(after: list[list[int]], done: list[int]) -> list[int]:
    """Steps not yet written whose prerequisites all are, in canonical order."""
    return [i for i in range(len(after)) if i not in done and all(d in done for d in after[i])]


def walk(task: dict, response: str) -> tuple[list[int], int | None, list[int]]:
    """(steps the response wrote, in its order, up to its first error; the character offset of that
    error or None; the steps that were valid there). Blank lines and surrounding white space are
    ignored; a response that stops early has no error. Two steps with the same text are told apart
    by canonical order (the world generates none)."""
    steps, after = [step.strip() for step in task["steps"]], prerequisites(task)
    done: list[int] = []
    for offset, line in _lines_with_offsets(response):
        ready = _ready(after, done)
        match = next((i for i in ready if _writes(line, steps[i])), None)
        if match is None:
            return done, offset, ready
        done.append(match)
    return done, None, _ready(after, done)


def first_error_offset(task: dict, response: str) -> int | None:
    """Character offset in ``response`` of its first line that is on no valid path from what it
    wrote before (None: a correct response, or one that stops early)."""
    return walk(task, response)[1]


def response_path(task: dict, response: str) -> tuple[int, ...]:
    """The canonical indices of the steps the response wrote, in its order, up to its first error:
    a correct response's path (a permutation of every step)."""
    return tuple(walk(task, response)[0])


def valid_path(task: dict, response: str) -> tuple[int, ...] | None:
    """The path of a response that stays on valid paths to its end (every correct solution), else
    None: a right final answer reached through a wrong line follows no path."""
    done, offset, _ = walk(task, response)
    return tuple(done) if offset is None else None


def intended_step(task: dict, response: str) -> int | None:
    """The step the response's first wrong line attempted: of the steps valid there, the one whose
    text shares the longest start with the wrong line (canonical order breaks ties); None when no
    step was left (a line after the end) or the response has no error."""
    _, offset, ready = walk(task, response)
    if offset is None or not ready:
        return None
    wrong = response[offset:].split("\n", 1)[0].strip()

    def shared(i: int) -> int:
        step = task["steps"][i].strip()
        return next((n for n, (a, b) in enumerate(zip(step, wrong)) if a != b), min(len(step), len(wrong)))

    return max(ready, key=lambda i: (shared(i), -i))


def valid_paths(task: dict) -> list[tuple[int, ...]]:
    """Every valid order of the task's steps (the linear extensions of ``after``), canonical first."""
    after = prerequisites(task)
    paths: list[tuple[int, ...]] = []

    def extend(done: list[int]) -> None:
        if len(done) == len(after):
            paths.append(tuple(done))
        for i in _ready(after, done):
            extend(done + [i])

    extend([])
    return paths


def path_solution(task: dict, path: tuple[int, ...]) -> str:
    """The correct solution written along ``path`` (a step's line is the same on every path)."""
    return "\n".join(task["steps"][i] for i in path)
