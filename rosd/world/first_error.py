"""How a reflector's quote sits against the true first error of a wrong world rollout, and which
solution path a rollout took: the world knows each task's steps and their valid orders, so it can
say where an answer first goes wrong and which path a correct one followed, which no real
benchmark can."""

from __future__ import annotations

from rosd.method.reflection import char_token
from rosd.world.paths import first_error_offset, valid_path


def _true_first_error(row: dict) -> int | None:
    """Where a wrong world rollout with a found quote first deviates from its task's steps; None for
    a correct rollout, no quote found, a task off the world, or a response that never deviates."""
    if row["reward"] == 1.0 or row.get("quote_char") is None or not row["task"].get("steps"):
        return None
    return first_error_offset(row["task"], row["response"])


def quote_line_offset(row: dict) -> int | None:
    """Lines from a wrong rollout's true first error to where its found quote starts (0: on it,
    negative: before it); None where ``_true_first_error`` is."""
    start = _true_first_error(row)
    if start is None:
        return None
    response = row["response"]
    return response.count("\n", 0, row["quote_char"]) - response.count("\n", 0, start)


def true_error_hit(row: dict) -> bool | None:
    """Whether the found quote starts on the line of the true first error (world tasks only)."""
    start = _true_first_error(row)
    if start is None:
        return None
    end = row["response"].find("\n", start)
    end = len(row["response"]) if end == -1 else end
    return start <= row["quote_char"] <= end


def _path(task: dict, response: str | None) -> list[int] | None:
    """The canonical step indices ``response`` wrote, in its order (``rosd.world.paths``): a valid
    path; None off the world, without a response, or when a line leaves every valid path (a right
    final answer reached through a wrong line follows no path)."""
    path = valid_path(task, response) if task.get("steps") and response is not None else None
    return None if path is None else list(path)


def annotate_paths(tokenizer, row: dict, mapping: str) -> None:
    """Set a world rollout's mechanism annotations (None elsewhere): ``path``, the path of a correct
    rollout; ``sibling_path``, that of its sibling solution; ``first_error_token``, the response
    token where a wrong rollout's true first error starts, mapped as its quote would be
    (``mapping``: ``reflection.quote_mapping``), so the tokens before it are its valid prefix."""
    task, wrong = row["task"], row["reward"] == 0.0
    row["path"] = None if wrong else _path(task, row["response"])
    row["sibling_path"] = _path(task, row["sibling"])
    start = first_error_offset(task, row["response"]) if wrong and task.get("steps") else None
    row["first_error_token"] = None if start is None else char_token(tokenizer, row["response"], row["response_ids"], start, mapping)
