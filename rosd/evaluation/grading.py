"""Verifiers: one score per (kind, response, answer), 1.0 or 0.0 (docs/method.md, "Verifiers").

Two readings, chosen by ``mode``. ``"reference"`` (the default) grades exactly as the reference
verifiers do (``verl/utils/reward_score/feedback/{mcq,tooluse,math}.py``), on which the paper's
numbers rest; ``"lenient"`` is a more forgiving reading, for answers the reference's regexes miss
(nested tool inputs, whole-line action names, a box outside the last 100 characters). They differ in:

============  ==========================================  ==========================================
switch        reference (default)                         lenient
============  ==========================================  ==========================================
mcq tags      text after the last ``<answer>``, up to     text between the last ``<answer>`` and the
              ``</answer>`` *or the end*; no tag: the     next ``</answer>``; either tag missing:
              whole text                                  no answer (0)
mcq gold      compared as given                           stripped
action names  ``Action:\\s*(\\w+)``: the first word       ``Action:\\s*([^\\n]+)``: the whole rest
              (``Action: getX (fetch)`` is ``getX``)      of the line, stripped
action input  ``Action Input:\\s*{`` up to the *first*    ``Action Input:`` then one JSON value
              ``}``, ``json.loads``; a nested object      (``raw_decode``, nesting read), cut at the
              never parses (skipped)                      next ``Action Input:``; non-objects skipped
tool gold     names as given; an ``Action_Input`` that    names stripped; an ``Action_Input`` that
              is not JSON counts as ``{}``, one that is   is not JSON is a data error (ValueError),
              not an object is a data error (ValueError)  one that is not an object is skipped
math box      last ``\\boxed{`` in the *last 100          last ``\\boxed{}`` with balanced braces in
              characters*; unbalanced: ``""`` (wrong),    the whole text, else an earlier complete
              no fallback                                 one
math compare  box == gold as strings, unstripped; else    stripped strings equal, or both integers
              math-verify on the bare strings (when the   equal by value; else math-verify on the
              box is not empty)                           strings re-wrapped in ``\\boxed{}``
============  ==========================================  ==========================================

Both modes share the rest. math-verify runs in worker processes with a timeout (`rosd.evaluation.mathverify`,
never threads: its timeouts are signals); `score_batch` spreads a batch's math-verify checks over
the worker pool. Every reading is linear in the response length (one pass; the work is counted on
a `_Budget`), and every sample's grading has a deadline, ``timeout`` seconds (default
`rosd.evaluation.mathverify.DEFAULT_TIMEOUT`) for the reading and as long again for each math-verify phase: a
sample that runs past it scores 0 and is counted in `grade_batch`'s ``timed_out``.

Responses: None scores 0; bytes are decoded as UTF-8 with replacement. A tool-use gold answer that
is not a JSON list of ``{"Action", "Action_Input"}`` objects is a data error (ValueError), as is an
unknown ``kind`` or ``mode``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable
from typing import NamedTuple

KINDS = ("math", "mcq", "tooluse")
GRADING_MODES = ("reference", "lenient")
MATH_TAIL = 100  # reference: characters at the end of a response searched for the box

log = logging.getLogger(__name__)

_BOX = "\\boxed{"
_BRACE = re.compile(r"[{}]")
_REVERSED_BOX_OR_BRACE = re.compile(r"\{dexob\\|[{}]")  # in the reversed text: "\boxed{" or a brace
_ACTION = {"reference": re.compile(r"Action:\s*(\w+)"), "lenient": re.compile(r"Action:\s*([^\n]+)")}
_REFERENCE_INPUT = re.compile(r"Action Input:\s*\{")
_LENIENT_INPUT = re.compile(r"Action Input:\s*")
# Plain integers compare by value in-process (math-verify would agree); capped in length because
# int() refuses strings beyond a few thousand digits.
_INTEGER = re.compile(r"[+-]?\d{1,100}")


# --- the per-sample deadline --------------------------------------------------------------------

_clock = time.monotonic  # module-level, so a test can drive it
_CHECK_EVERY = 4096  # work units between two looks at the clock


class _Overrun(Exception):
    """A sample's grading ran past its deadline."""


class _Budget:
    """The work one sample's reading does (one unit per brace visited or per character handed to
    a JSON decoder) and its deadline, looked at every `_CHECK_EVERY` units and at the end."""

    __slots__ = ("deadline", "work", "_next_look")

    def __init__(self, seconds: float | None = None):
        self.deadline = None if seconds is None else _clock() + seconds
        self.work = 0
        self._next_look = _CHECK_EVERY

    def spend(self, units: int = 1) -> None:
        self.work += units
        if self.work >= self._next_look:
            self._next_look = self.work + _CHECK_EVERY
            self.check()

    def check(self) -> None:
        if self.deadline is not None and _clock() > self.deadline:
            raise _Overrun


def _mode(mode: str) -> str:
    if mode not in GRADING_MODES:
        raise ValueError(f"unknown grading mode {mode!r}; expected one of {', '.join(GRADING_MODES)}")
    return mode


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def _text(response) -> str | None:
    """A response as text: None stays None, bytes are decoded with replacement, and lone
    surrogates (text decoded with ``surrogateescape``) are replaced the same way."""
    if response is None:
        return None
    if isinstance(response, (bytes, bytearray, memoryview)):
        return bytes(response).decode("utf-8", "replace")
    if not isinstance(response, str):
        raise TypeError(f"a response must be str, bytes or None, not {type(response).__name__}")
    try:
        response.encode("utf-8")
    except UnicodeEncodeError:
        return response.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return response


# --- readings -----------------------------------------------------------------------------------


def _closing_brace(text: str, opening: int, budget: _Budget) -> int | None:
    """Index of the ``}`` that brings the depth back to zero, scanning from the ``{`` at
    ``opening``; None when the text ends first."""
    depth = 0
    for match in _BRACE.finditer(text, opening):
        budget.spend()
        depth += 1 if text[match.start()] == "{" else -1
        if depth == 0:
            return match.start()
    return None


def _last_complete_box(text: str, budget: _Budget) -> str | None:
    """Content of the last ``\\boxed{...}`` whose braces balance, in one backward pass.

    A box opening at ``b`` closes iff some prefix of ``text[b:]`` has at least as many ``}`` as
    ``{``. Walking the braces backwards, ``lowest`` = min(0, the lowest brace balance of a prefix
    of the text after the current position), updated in O(1) per brace; a box opening here closes
    iff ``lowest <= -1``. The first such box seen is the last one; its closing brace is then found
    by one forward scan.
    """
    first = text.find(_BOX)
    if first == -1:
        return None
    reverse = text[first:][::-1]  # braces before the first box cannot matter
    lowest = 0
    for match in _REVERSED_BOX_OR_BRACE.finditer(reverse):
        budget.spend()
        if reverse[match.start()] == "}":
            lowest -= 1
            continue
        if match.end() - match.start() > 1 and lowest <= -1:  # a box, and it closes
            opening = len(text) - 1 - match.start()
            closing = _closing_brace(text, opening, budget)
            return text[opening + 1 : closing]
        lowest = min(0, lowest + 1)
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces in the whole text (an earlier
    complete box when the last one is unbalanced), or None. The lenient math reading."""
    return _last_complete_box(text, _Budget())


def _reference_box(text: str, budget: _Budget) -> str | None:
    """The reference's reading: the last ``\\boxed{`` among the last `MATH_TAIL` characters; its
    content, "" when its braces do not balance there, None when there is no box."""
    tail = text[-MATH_TAIL:]
    start = tail.rfind(_BOX)
    if start == -1:
        return None
    closing = _closing_brace(tail, start + len(_BOX) - 1, budget)
    return "" if closing is None else tail[start + len(_BOX) : closing]


def math_answer(text: str, *, mode: str = "reference") -> str | None:
    """The boxed answer a response gives, as ``mode`` reads it (see the module's table): None when
    there is no box; under "reference", "" for an unbalanced last box."""
    budget = _Budget()
    return _reference_box(text, budget) if _mode(mode) == "reference" else _last_complete_box(text, budget)


def mcq_answer(text: str, *, mode: str = "reference") -> str | None:
    """The chosen option, stripped. Reference: the text after the last ``<answer>`` (the whole text
    without one) up to the next ``</answer>`` or the end, never None. Lenient: the text between the
    last ``<answer>`` and the next ``</answer>``, None when either tag is missing."""
    lenient = _mode(mode) == "lenient"
    start = text.rfind("<answer>")
    if start == -1:
        if lenient:
            return None
        start = 0
    else:
        start += len("<answer>")
    end = text.find("</answer>", start)
    if end == -1:
        if lenient:
            return None
        end = len(text)
    return text[start:end].strip()


def _reference_inputs(text: str, budget: _Budget) -> dict:
    """``Action Input:\\s*({.*?})`` (DOTALL) blocks that ``json.loads``, merged; blocks are
    disjoint, so each character is decoded at most once."""
    merged: dict = {}
    position = 0
    while (match := _REFERENCE_INPUT.search(text, position)) is not None:
        opening = match.end() - 1
        closing = text.find("}", opening)
        if closing == -1:  # no later block can close either
            break
        block = text[opening : closing + 1]
        budget.spend(len(block))
        try:
            value = json.loads(block)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict):
            merged.update(value)
        position = closing + 1
    return merged


def _lenient_inputs(text: str, budget: _Budget) -> dict:
    """One JSON value after each ``Action Input:`` (objects merged), each read from its own segment
    of the text, up to the next ``Action Input:``: the segments are disjoint, so the decoding
    (and a decoding error's line count) is linear in the text."""
    decoder = json.JSONDecoder()
    merged: dict = {}
    matches = list(_LENIENT_INPUT.finditer(text))
    ends = [match.start() for match in matches[1:]] + [len(text)]
    for match, end in zip(matches, ends):
        segment = text[match.end() : end]
        budget.spend(len(segment) + 1)
        try:
            value, _ = decoder.raw_decode(segment)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            merged.update(value)
    return merged


def _tool_calls(text: str, mode: str, budget: _Budget) -> tuple[Counter, dict]:
    names = _ACTION[mode].findall(text)
    budget.spend(len(names))
    if mode == "lenient":
        names = [name.strip() for name in names]
        return Counter(names), _lenient_inputs(text, budget)
    return Counter(names), _reference_inputs(text, budget)


def tool_calls(text: str, *, mode: str = "reference") -> tuple[Counter, dict]:
    """All ``Action:`` names as a multiset and all ``Action Input:`` objects merged, as ``mode``
    reads them (see the module's table)."""
    return _tool_calls(text, _mode(mode), _Budget())


def gold_tool_calls(answer: str | bytes | list, *, mode: str = "reference") -> tuple[Counter, dict]:
    """The gold actions as a multiset and their inputs merged. ``answer`` is a JSON list (or the
    list itself) of ``{"Action": name, "Action_Input": JSON object or its JSON string}``.

    Raises ValueError, one line, when it is not (a data error). Reference: names as given, an
    ``Action_Input`` that is missing, empty or not JSON counts as no input. Lenient: names stripped,
    a missing or empty ``Action_Input`` is no input, one that is not JSON is a data error.
    """
    _mode(mode)
    calls = answer
    if isinstance(answer, (str, bytes, bytearray)):
        try:
            calls = json.loads(answer)
        except ValueError as error:
            raise ValueError(f"tool-use gold answer is not JSON ({error}): {_clip(answer)}") from None
    if not isinstance(calls, list):
        raise ValueError(f"tool-use gold answer is not a list of calls: {_clip(answer)}")
    names: Counter = Counter()
    merged: dict = {}
    for number, call in enumerate(calls):
        if not isinstance(call, dict) or "Action" not in call:
            raise ValueError(f"tool-use gold call {number} is not an object with an 'Action': {_clip(call)}")
        given = call.get("Action_Input")
        if mode == "reference":
            names[call["Action"]] += 1
            if isinstance(given, str):
                try:
                    given = json.loads(given)
                except ValueError:
                    given = {}
        else:
            names[str(call["Action"]).strip()] += 1
            given = given or "{}"
            if isinstance(given, str):
                try:
                    given = json.loads(given)
                except ValueError as error:
                    raise ValueError(f"tool-use gold call {number} has an Action_Input that is not JSON "
                                     f"({error}): {_clip(call['Action_Input'])}") from None
        if isinstance(given, dict):
            merged.update(given)
        elif given and mode == "reference":
            raise ValueError(f"tool-use gold call {number} has an Action_Input that is not an object: {_clip(given)}")
    return names, merged


def _clip(value, width: int = 80) -> str:
    shown = repr(value)
    return shown if len(shown) <= width else shown[: width - 3] + "..."


# --- scoring ------------------------------------------------------------------------------------


class Graded(NamedTuple):
    """What `grade_batch` returns: one score per item, and how many items ran past their deadline
    (their reading, or a math-verify check that timed out or crashed); those scored 0."""

    scores: list[float]
    timed_out: int


def _math_reference(text: str, answer, budget: _Budget) -> tuple[float | None, tuple[str, str] | None]:
    """(score, None) when decided in-process, else (None, (gold, boxed)) for math-verify."""
    boxed = _reference_box(text, budget)
    gold = str(answer)
    if boxed == gold:
        return 1.0, None
    if not boxed:  # no box, or an unbalanced one: the reference does not ask math-verify
        return 0.0, None
    return None, (gold, boxed)


def _math_lenient(text: str, answer, budget: _Budget) -> tuple[float | None, tuple[str, str] | None]:
    boxed = _last_complete_box(text, budget)
    if boxed is None:
        return 0.0, None
    given, gold = boxed.strip(), str(answer).strip()
    if given == gold:
        return 1.0, None
    if _INTEGER.fullmatch(given) and _INTEGER.fullmatch(gold):
        return float(int(given) == int(gold)), None
    return None, (gold, given)


def _grade_in_process(kind: str, text: str, answer, mode: str, budget: _Budget):
    if kind == "mcq":
        gold = str(answer) if mode == "reference" else str(answer).strip()
        return float(mcq_answer(text, mode=mode) == gold), None
    if kind == "tooluse":
        gold_calls = gold_tool_calls(answer, mode=mode)  # a data error raises, deadline or not
        return float(_tool_calls(text, mode, budget) == gold_calls), None
    return (_math_reference if mode == "reference" else _math_lenient)(text, answer, budget)


def grade_batch(
    items: Iterable[tuple[str, object, object]], *, mode: str = "reference", timeout: float | None = None
) -> Graded:
    """Grade each (kind, response, answer): `Graded` (scores, timed_out).

    ``timeout`` (seconds, default `rosd.evaluation.mathverify.DEFAULT_TIMEOUT`) is each sample's deadline for
    reading its response and, separately, for each phase of its math-verify check; the checks of
    the whole batch run in parallel in the worker pool. A sample past either deadline scores 0 and
    is counted in ``timed_out``. Raises ValueError on an unknown kind or mode, or a tool-use gold
    answer that is not valid.
    """
    from rosd.evaluation.mathverify import DEFAULT_TIMEOUT, check_many

    _mode(mode)
    seconds = timeout or DEFAULT_TIMEOUT
    scores: list[float | None] = []
    undecided: list[tuple[int, tuple[str, str]]] = []  # (position, (gold, boxed)) for math-verify
    timed_out = 0
    for position, (kind, response, answer) in enumerate(items):
        _kind(kind)
        text = _text(response)
        if text is None:
            scores.append(0.0)
            continue
        budget = _Budget(seconds)
        try:
            decided, pair = _grade_in_process(kind, text, answer, mode, budget)
            budget.check()
        except _Overrun:
            decided, pair = 0.0, None
            timed_out += 1
        scores.append(decided)
        if pair is not None:
            undecided.append((position, pair))
    verdicts = check_many([pair for _, pair in undecided], timeout=seconds, rebox=mode == "lenient")
    for (position, _), same in zip(undecided, verdicts):
        scores[position] = float(bool(same))
        timed_out += same is None
    if timed_out:
        log.warning("%d of %d samples ran past the grading deadline (%gs) and scored 0",
                    timed_out, len(scores), seconds)
    return Graded(scores, timed_out)  # type: ignore[arg-type]


def score_batch(
    items: Iterable[tuple[str, object, object]], *, mode: str = "reference", timeout: float | None = None
) -> list[float]:
    """`grade_batch`'s scores alone."""
    return grade_batch(items, mode=mode, timeout=timeout).scores


def score(kind: str, response, answer, *, mode: str = "reference") -> float:
    """1.0 if ``response`` answers correctly, else 0.0. ``kind`` is "math", "mcq" or "tooluse";
    ``mode`` "reference" or "lenient" (see the module's table)."""
    return grade_batch([(kind, response, answer)], mode=mode).scores[0]


def extract_answer(kind: str, response, *, mode: str = "reference") -> str | None:
    """The answer a response gives, in a canonical string form (for majority voting), as ``mode``
    reads it; None when it gives none (no box or an unbalanced one, an empty option, no action)."""
    _kind(kind)
    _mode(mode)
    text = _text(response)
    if text is None:
        return None
    if kind == "math":
        boxed = math_answer(text, mode=mode)
        return (boxed or "").strip() or None
    if kind == "mcq":
        return mcq_answer(text, mode=mode) or None
    names, inputs = tool_calls(text, mode=mode)
    if not names:
        return None
    return json.dumps([sorted(names.elements()), inputs], sort_keys=True, default=str)
