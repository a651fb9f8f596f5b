"""Math grading (docs/method.md, "Verifiers"): the boxed answer compared as a string, then math-verify in worker processes
whose hangs and crashes cost one sample, never the run. Reference: the last box of the last 100
characters, math-verify on the bare strings; lenient: the last complete box, re-boxed strings."""

import sys
import time

import pytest

from rosd.evaluation.grading import (
    GRADING_MODES,
    Graded,
    grade_batch,
    score,
    score_batch,
)
from rosd.evaluation.mathverify import CheckPool, check_many, equivalent_many

pytest.importorskip("math_verify")


@pytest.mark.parametrize(
    "response, answer, reference, lenient",
    [
        ("so \\boxed{\\frac{1}{2}}", "0.5", 1.0, 1.0),  # not equal as text: math-verify decides
        ("\\boxed{19}", 19, 1.0, 1.0),  # an int gold answer
        ("\\boxed{019}", "19", 1.0, 1.0),  # reference: math-verify; lenient: integers by value
        ("\\boxed{ 19 }", "19", 1.0, 1.0),  # reference: unequal strings, math-verify agrees
        ("\\boxed{\\dfrac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}", 0.0, 1.0),  # bare: parses to nothing
        ("\\boxed{\\frac{1}{3}}", "0.5", 0.0, 0.0),
        ("first \\boxed{\\frac{1}{2}}, finally \\boxed{3}", "0.5", 0.0, 0.0),  # the last box counts
        ("first \\boxed{3}, finally \\boxed{\\frac{1}{2}}", "0.5", 1.0, 1.0),
        ("the answer is 0.5", "0.5", 0.0, 0.0),  # no box: wrong, math-verify is not asked
        ("\\boxed{\\frac{1}{2}", "0.5", 0.0, 0.0),  # unbalanced box
        ("\\boxed{\\frac{1}{2}}" + "." * 100, "0.5", 0.0, 1.0),  # reference: only the last 100 characters
        ("\\boxed{\\frac{1}{2}} then \\boxed{\\frac{1}", "0.5", 0.0, 1.0),  # unbalanced last box, no fallback
    ],
)
def test_math_cases(response, answer, reference, lenient):
    items = [("math", response, answer)]
    assert [score_batch(items, mode=mode)[0] for mode in GRADING_MODES] == [reference, lenient]


def test_batch_grades_like_single_calls_and_a_hang_costs_one_sample():
    tower = "\\boxed{9^{9^{9^{9}}}}"  # sympy would spin on this for as long as it is let
    items = [
        ("math", "\\boxed{\\frac{2}{4}}", "0.5"),
        ("math", tower, "1"),
        ("mcq", "<answer>B</answer>", "B"),
        ("math", "\\boxed{0.25}", "\\frac{1}{4}"),
        ("math", "\\boxed{7}", "8"),
    ]
    started = time.monotonic()
    graded = grade_batch(items, mode="lenient", timeout=1.0)
    assert graded == Graded([1.0, 0.0, 1.0, 1.0, 0.0], 1)  # the tower ran out of time, and is counted
    assert time.monotonic() - started < 20  # bounded by the timeout, not by sympy
    assert score_batch(items, timeout=1.0) == [1.0, 0.0, 1.0, 1.0, 0.0]  # the reference agrees here
    rest = [item for i, item in enumerate(items) if i != 1]
    assert [s for i, s in enumerate(graded.scores) if i != 1] == [score(*item, mode="lenient") for item in rest]


def test_pathological_power_tower_is_bounded_by_the_timeout():
    started = time.monotonic()
    assert equivalent_many([("1", "9^{9^{9^{9}}}"), ("1", "\\frac{2}{2}")], timeout=1.0) == [False, True]
    assert check_many([("1", "9^{9^{9^{9}}}"), ("1", "\\frac{2}{2}")], timeout=1.0) == [None, True]  # a timeout
    assert check_many([("\\frac{\\sqrt3}{2}", "\\dfrac{\\sqrt{3}}{2}")], rebox=False) == [False]
    assert time.monotonic() - started < 2 * (3 * 1.0 + 1.0) + 10  # the outer deadline, plus a loaded machine


# A worker speaking the pool's line protocol, with requests that hang past math-verify's own
# signal timeout (SIGALRM ignored, a sleep) or kill the worker: the outer deadline must catch both.
MISBEHAVING_WORKER = """
import json, os, signal, sys, time
print("ready", flush=True)
for line in sys.stdin:
    action, value = json.loads(line)
    if action == "hang":
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        time.sleep(value)
    if action == "crash":
        os._exit(1)
    print(json.dumps(value), flush=True)
"""


@pytest.mark.pipeline
def test_outer_deadline_kills_hung_and_crashed_workers_and_keeps_the_rest():
    pool = CheckPool(command=[sys.executable, "-c", MISBEHAVING_WORKER], workers=2)
    try:
        started = time.monotonic()
        requests = [["echo", 1], ["hang", 60], ["echo", 2], ["crash", 0], ["echo", 3]]
        assert pool.run(requests, deadline=2.0) == [1, None, 2, None, 3]
        assert pool.run([["echo", 4]], deadline=2.0) == [4]  # the replaced workers serve on
        assert time.monotonic() - started < 30
    finally:
        pool.close()


@pytest.mark.pipeline
def test_workers_forked_from_a_process_with_math_verify_answer_like_started_ones():
    """This process has math-verify imported (importorskip above), as a fork of the stage worker
    does: its default pool forks its workers. A pool given a command starts them as processes."""
    pairs = [("0.5", "\\frac{1}{2}"), ("1", "9^{9^{9^{9}}}"), ("x+1", "1+x"), ("2", "3")]
    requests = [[gold, predicted, 1.0, True] for gold, predicted in pairs]
    forked, started = CheckPool(workers=2), CheckPool(command=[sys.executable, "-I", "-m", "rosd.evaluation.mathverify"], workers=2)
    try:
        assert forked.run(requests, deadline=4.0) == started.run(requests, deadline=4.0) == [True, None, True, False]
        assert {type(w).__name__ for w in forked._idle} == {"_ForkedWorker"}
        assert {type(w).__name__ for w in started._idle} == {"_Worker"}
    finally:
        forked.close()
        started.close()
