"""How a reflector's quote sits against the true first error of a wrong world rollout: the world knows
each task's steps, so it can say where an answer first goes wrong, which no real benchmark can."""

from __future__ import annotations

from rosd.world.tasks import first_error_offset


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
