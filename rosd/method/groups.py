"""A prompt's group of rollouts: which groups carry loss, each rollout's sibling solution, what its
teacher reads, and GRPO's group-relative advantage (docs/method.md, "Groups" and
"Teacher prompt")."""

from __future__ import annotations

import random
from collections import defaultdict
from statistics import mean

from rosd.method.prompts import remove_thinking


def mark_groups(rows: list[dict], *, group_filter: str = "zero_variance", skip_no_success: bool = True, sibling: str = "first", seed: int = 0) -> None:
    """Set ``in_loss`` and ``sibling`` (a correct rollout of the same group other than this one).

    The zero-variance filter (ref) drops groups whose rollouts all agree, which also drops groups
    with no success; ``sibling`` is the first other correct rollout (ref) or a seeded random one,
    without its ``<think>`` spans (ref: remove_thinking_from_demonstration).
    """
    rng = random.Random(seed)
    groups = defaultdict(list)
    for row in rows:
        groups[row["group"]].append(row)
    for members in groups.values():
        rewards = {m["reward"] for m in members}
        keep = len(rewards) > 1 if group_filter == "zero_variance" else True
        if skip_no_success and 1.0 not in rewards:
            keep = False
        for m in members:
            m["in_loss"] = keep
            others = [o["response"] for o in members if o is not m and o["reward"] == 1.0]
            chosen = (others[0] if sibling == "first" else rng.choice(others)) if others else None
            m["sibling"] = remove_thinking(chosen) if chosen is not None else None


def teacher_context(row: dict, context: str) -> tuple[str | None, str | None]:
    """(solution, reflection) the teacher reads, by the method's teacher context (docs/method.md, "Teacher prompt")."""
    reflection = row.get("explanation")
    if context == "reflection_else_solution":
        return (None, reflection) if reflection else (row["sibling"], None)
    return {
        "solution_and_reflection": (row["sibling"], reflection),
        "reflection": (None, reflection),
        "solution": (row["sibling"], None),
        "reference": (row["task"].get("solution"), None),
    }[context]


def group_advantages(rows: list[dict]) -> None:
    """GRPO's advantage: the reward minus its group's mean reward (no std scaling)."""
    groups: dict[int, list[float]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r["reward"])
    for r in rows:
        r["advantage"] = r["reward"] - mean(groups[r["group"]])
