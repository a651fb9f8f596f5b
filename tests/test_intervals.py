"""rosd/evaluation/intervals.py: bootstrap intervals over problems and seeds, pinned on cases whose bootstrap
distribution can be written down by hand."""

import numpy as np
import pytest

from rosd.evaluation.intervals import mean_interval, paired_difference, problem_scores


def test_problem_scores_are_the_fraction_of_correct_samples_per_problem():
    records = [{"id": "a", "correct": 1}, {"id": "a", "correct": 0}, {"id": "b", "correct": 1}, {"id": "a", "correct": 1}]
    assert problem_scores(records) == {"a": 2 / 3, "b": 1.0}


def test_two_problems_one_seed():
    # a resample's mean is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4: the 2.5th and 97.5th
    # percentiles are 0 and 1
    assert mean_interval([[0.0, 1.0]]) == (0.5, 0.0, 1.0)


def test_two_seeds_that_disagree_widen_the_interval_though_every_problem_agrees_within_a_seed():
    # seed 0 fails and seed 1 solves all 50 problems: resampling problems alone changes nothing,
    # resampling seeds gives 0, 1/2 or 1 as above
    assert mean_interval([[0.0] * 50, [1.0] * 50]) == (0.5, 0.0, 1.0)


def test_a_constant_score_has_no_width():
    assert mean_interval([[0.25] * 7, [0.25] * 7, [0.25] * 7]) == (0.25, 0.25, 0.25)


def test_many_problems_match_the_normal_approximation():
    # 400 problems, half solved: mean 0.5, half-width 1.96 * sqrt(0.25 / 400) = 0.049
    mean, low, high = mean_interval([[0.0, 1.0] * 200])
    assert mean == 0.5
    assert low == pytest.approx(0.451, abs=0.006) and high == pytest.approx(0.549, abs=0.006)


def test_a_constant_shift_on_the_same_problems_is_resolved_exactly():
    baseline = np.random.default_rng(1).integers(0, 5, size=(1, 30)) / 4  # problems of every difficulty
    method = baseline + 0.25  # every problem a quarter better
    assert paired_difference(method, baseline) == pytest.approx((0.25, 0.25, 0.25))
    # unpaired, the problems' own spread makes each mean uncertain: the two intervals overlap
    assert mean_interval(method)[1] < mean_interval(baseline)[2]


def test_seeds_of_two_methods_are_drawn_apart():
    # both methods: seed 0 fails, seed 1 solves everything. Paired on problems but not on seeds,
    # the difference is 0 on average and anything from -1 to 1 in a resample
    scores = [[0.0] * 20, [1.0] * 20]
    difference, low, high = paired_difference(scores, scores)
    assert difference == 0.0 and low == -1.0 and high == 1.0


def test_paired_scores_must_cover_the_same_problems():
    with pytest.raises(ValueError, match="same problems"):
        paired_difference([[1.0, 0.0]], [[1.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="seeds x problems"):
        mean_interval([1.0, 0.0])


def test_the_same_scores_give_the_same_interval():
    scores = np.random.default_rng(2).random((3, 20))
    assert mean_interval(scores) == mean_interval(scores)
    assert paired_difference(scores, scores[::-1]) == paired_difference(scores, scores[::-1])
