"""Verifiers: one score per (kind, response, answer), graded as the reference grades (SPEC §4).

Math: the last balanced ``\\boxed{}`` compared exactly; only when that fails does math-verify decide,
in worker processes with a timeout (`rosd.mathverify`). `score_batch` grades many responses with
the math-verify checks of the whole batch spread over the worker pool.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable

KINDS = ("math", "mcq", "tooluse")

_ACTION = re.compile(r"Action:\s*([^\n]+)")
_ACTION_INPUT = re.compile(r"Action Input:\s*")
# Plain integers compare by value in-process (math-verify would agree); capped in length because
# int() refuses strings beyond a few thousand digits.
_INTEGER = re.compile(r"[+-]?\d{1,100}")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces, or None."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth, i = 0, start + len("\\boxed")
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j]
        # unbalanced: look for an earlier, complete box
        start = text.rfind("\\boxed{", 0, start)
    return None


def mcq_answer(text: str) -> str | None:
    """Text between the last ``<answer>`` and the next ``</answer>``, stripped."""
    start = text.rfind("<answer>")
    if start == -1:
        return None
    end = text.find("</answer>", start)
    if end == -1:
        return None
    return text[start + len("<answer>") : end].strip()


def tool_calls(text: str) -> tuple[Counter, dict]:
    """All ``Action:`` names as a multiset and all ``Action Input:`` JSON objects merged."""
    names = Counter(m.group(1).strip() for m in _ACTION.finditer(text))
    merged: dict = {}
    decoder = json.JSONDecoder()
    for m in _ACTION_INPUT.finditer(text):
        try:
            value, _ = decoder.raw_decode(text, m.end())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            merged.update(value)
    return names, merged


def gold_tool_calls(answer: str | list) -> tuple[Counter, dict]:
    calls = json.loads(answer) if isinstance(answer, str) else answer
    names: Counter = Counter()
    merged: dict = {}
    for call in calls:
        names[call["Action"].strip()] += 1
        given = call.get("Action_Input") or "{}"
        value = json.loads(given) if isinstance(given, str) else given
        if isinstance(value, dict):
            merged.update(value)
    return names, merged


def _math_without_verifier(boxed: str | None, answer) -> float | None:
    """1.0 or 0.0 when the boxed answer decides it alone; None when math-verify must decide."""
    if boxed is None:
        return 0.0
    given, gold = boxed.strip(), str(answer).strip()
    if given == gold:
        return 1.0
    if _INTEGER.fullmatch(given) and _INTEGER.fullmatch(gold):
        return float(int(given) == int(gold))
    return None


def score(kind: str, response: str, answer) -> float:
    """1.0 if ``response`` answers correctly, else 0.0. ``kind`` is "math", "mcq" or "tooluse"."""
    if kind == "math":
        return score_batch([(kind, response, answer)])[0]
    if kind == "mcq":
        return float(mcq_answer(response) == str(answer).strip())
    if kind == "tooluse":
        return float(tool_calls(response) == gold_tool_calls(answer))
    raise ValueError(f"unknown task kind {kind!r}; expected one of {', '.join(KINDS)}")


def score_batch(items: Iterable[tuple[str, str, object]], *, timeout: float | None = None) -> list[float]:
    """`score` of each (kind, response, answer), with the math-verify checks run in parallel;
    ``timeout`` bounds each math-verify phase (default `rosd.mathverify.DEFAULT_TIMEOUT`)."""
    from rosd.mathverify import DEFAULT_TIMEOUT, equivalent_many

    scores: list[float | None] = []
    undecided: list[tuple[int, str, str]] = []  # (position, gold, boxed) for math-verify
    for position, (kind, response, answer) in enumerate(items):
        if kind != "math":
            scores.append(score(kind, response, answer))
            continue
        boxed = last_boxed(response)
        decided = _math_without_verifier(boxed, answer)
        scores.append(decided)
        if decided is None:
            undecided.append((position, str(answer).strip(), boxed.strip()))
    verdicts = equivalent_many([(gold, boxed) for _, gold, boxed in undecided], timeout=timeout or DEFAULT_TIMEOUT)
    for (position, _, _), same in zip(undecided, verdicts):
        scores[position] = float(same)
    return scores  # type: ignore[return-value]


def extract_answer(kind: str, response: str) -> str | None:
    """The answer a response gives, in a canonical string form (for majority voting)."""
    if kind == "math":
        boxed = last_boxed(response)
        return boxed.strip() if boxed is not None else None
    if kind == "mcq":
        return mcq_answer(response)
    if kind == "tooluse":
        names, inputs = tool_calls(response)
        if not names:
            return None
        return json.dumps([sorted(names.elements()), inputs], sort_keys=True, default=str)
    raise ValueError(f"unknown task kind {kind!r}; expected one of {', '.join(KINDS)}")
