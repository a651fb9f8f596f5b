"""rosd.evaluation.metrics against hand-computed numbers."""

import math

import pytest

from rosd.evaluation.metrics import maj_at_k, mean_at_k, pass_at_k, pass_ks, summarize


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 0.4),  # c / n
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 0, 3, 0.0),
        (5, 3, 3, 1.0),  # n - c = 2 < k: every 3-subset holds a correct sample
        (5, 5, 1, 1.0),
        (10, 3, 4, 1 - 35 / 210),  # 1 - C(7,4)/C(10,4)
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomials_at_large_n():
    n, c, k = 200, 7, 16
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), rel=1e-12)


@pytest.mark.parametrize(
    ("n", "c", "k"),
    [(3, 1, 4), (0, 0, 1), (5, 6, 1), (5, -1, 1), (5, 1, 0), (5.0, 1, 1), (5, True, 1)],
)
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_at_k_weighs_problems_equally():
    assert mean_at_k([[1, 1, 0, 0], [1, 1]]) == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(ValueError):
        mean_at_k([])
    with pytest.raises(ValueError):
        mean_at_k([[1], []])


def test_maj_at_k_votes_over_first_k_with_first_occurrence_ties():
    problems = [
        [("4", 1), ("5", 0), ("4", 1), ("5", 0), ("5", 0)],  # first 4: tie 4 vs 5 -> "4" seen first
        [(None, 0), ("7", 0), ("3", 1), ("7", 0)],  # None does not vote; "7" wins 2-1
        [(None, 0), (None, 0), (None, 0), (None, 0)],  # nothing extracted: unsolved
        [("B", 1), ("A", 0), ("A", 0), ("A", 0)],
    ]
    assert maj_at_k(problems, 4) == pytest.approx(1 / 4)
    assert maj_at_k(problems, 1) == pytest.approx(2 / 4)  # only problems 1 and 4 start correct
    with pytest.raises(ValueError):
        maj_at_k(problems, 5)


def test_pass_ks_are_every_level_up_to_k():
    assert pass_ks(1) == [1]
    assert pass_ks(6) == [1, 2, 3, 4, 5, 6]


def _record(pid, sample, correct, extracted):
    return {"id": pid, "sample": sample, "correct": correct, "extracted": extracted, "response": ""}


def test_summarize_small_fixture():
    # problem a: 3 of 4 correct; problem b: 1 of 4 correct, its correct sample last
    records = [
        _record("a", 0, 1, "1"),
        _record("b", 3, 1, "2"),  # out of order on purpose: samples are sorted by index
        _record("a", 1, 0, "9"),
        _record("a", 2, 1, "1"),
        _record("a", 3, 1, "1"),
        _record("b", 0, 0, "8"),
        _record("b", 1, 0, "8"),
        _record("b", 2, 0, "7"),
    ]
    summary = summarize(records, k=4)
    assert summary["n_problems"] == 2
    assert summary["samples_per_problem"] == 4
    assert summary["k"] == 4
    assert summary["mean_at_k"] == pytest.approx((0.75 + 0.25) / 2)
    assert summary["pass_at_1"] == pytest.approx((0.75 + 0.25) / 2)
    # a: 1 - C(1,2)/C(4,2) = 1; b: 1 - C(3,2)/C(4,2) = 0.5
    assert summary["pass_at_2"] == pytest.approx((1.0 + 0.5) / 2)
    # every level up to k is reported: a: 1 - C(1,3)/C(4,3) = 1; b: 1 - C(3,3)/C(4,3) = 0.75
    assert summary["pass_at_3"] == pytest.approx((1.0 + 0.75) / 2)
    assert summary["pass_at_4"] == pytest.approx(1.0)
    assert summary["maj_at_k"] == pytest.approx(0.5)  # a votes "1" (right), b votes "8" (wrong)

    first_two = summarize(records, k=2)  # mean@2 uses samples 0 and 1; pass@j all four
    assert first_two["mean_at_k"] == pytest.approx((0.5 + 0.0) / 2)
    assert first_two["pass_at_2"] == pytest.approx(summary["pass_at_2"])
    assert "pass_at_4" not in first_two


def test_summarize_without_extracted_answers_and_bad_shapes():
    records = [{"id": "a", "sample": i, "correct": i % 2} for i in range(2)]
    assert "maj_at_k" not in summarize(records, k=2)
    with pytest.raises(ValueError):
        summarize(records, k=3)
    with pytest.raises(ValueError):
        summarize([*records, {"id": "b", "sample": 0, "correct": 1}], k=1)
    with pytest.raises(ValueError):
        summarize([], k=1)
