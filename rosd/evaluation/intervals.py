"""95% confidence intervals for mean@k and for paired differences between methods (a bootstrap over
problems and seeds).

A cell of the comparison is a matrix of per-problem scores: one row per seed (a training run), one
column per test problem, each entry the fraction of that problem's k samples that were correct, so
its mean is mean@k averaged over seeds. Two things vary between reruns of an experiment: which
problems the benchmark drew and which seeds trained. Each bootstrap resample therefore draws the
problems with replacement and, independently, the seeds with replacement, and takes the mean; the
interval is the resamples' 2.5th and 97.5th percentiles. With one seed only the problems vary.

A paired difference compares two methods on the same problems (every method is evaluated on the
same test split): one draw of problems serves both methods, and each method's seeds are drawn on
their own (seed s of two methods are unrelated runs). That pairing removes the problems' own
difficulty from the comparison, so a paired interval is narrower than the two separate ones.

The resamples come from a fixed random seed: the same scores give the same interval, byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0


def problem_scores(records: Sequence[dict]) -> dict[str, float]:
    """Per problem id, the fraction of its samples that are correct (one evaluation's jsonl)."""
    totals: dict[str, list[int]] = {}
    for record in records:
        counts = totals.setdefault(record["id"], [0, 0])
        counts[0] += int(record["correct"])
        counts[1] += 1
    return {problem: correct / samples for problem, (correct, samples) in totals.items()}


def _matrix(scores) -> np.ndarray:
    matrix = np.asarray(scores, dtype=float)
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise ValueError(f"scores must be a non-empty seeds x problems matrix, got shape {matrix.shape}")
    return matrix


def _seed_draws(rng: np.random.Generator, seeds: int, resamples: int) -> np.ndarray:
    return rng.integers(0, seeds, size=(resamples, seeds))


def _resampled_means(matrix: np.ndarray, seed_draws: np.ndarray, problem_draws: np.ndarray) -> np.ndarray:
    """Mean over the drawn seeds and problems, per resample (a row of draws of seeds, of problems)."""
    per_problem = matrix[seed_draws].mean(axis=1)  # resamples x problems: the drawn seeds' mean
    return np.take_along_axis(per_problem, problem_draws, axis=1).mean(axis=1)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def mean_interval(scores, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED) -> tuple[float, float, float]:
    """(mean, low, high) of a seeds x problems score matrix."""
    matrix = _matrix(scores)
    rng = np.random.default_rng(seed)
    problem_draws = rng.integers(0, matrix.shape[1], size=(resamples, matrix.shape[1]))
    means = _resampled_means(matrix, _seed_draws(rng, matrix.shape[0], resamples), problem_draws)
    return (float(matrix.mean()), *_percentiles(means, level))


def paired_difference(scores, baseline, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED) -> tuple[float, float, float]:
    """(difference, low, high) of mean(scores) - mean(baseline): two seeds x problems matrices whose
    columns are the same problems in the same order (their seed counts may differ)."""
    method, other = _matrix(scores), _matrix(baseline)
    if method.shape[1] != other.shape[1]:
        raise ValueError(f"paired scores need the same problems: {method.shape[1]} against {other.shape[1]}")
    rng = np.random.default_rng(seed)
    problem_draws = rng.integers(0, method.shape[1], size=(resamples, method.shape[1]))
    method_means = _resampled_means(method, _seed_draws(rng, method.shape[0], resamples), problem_draws)
    other_means = _resampled_means(other, _seed_draws(rng, other.shape[0], resamples), problem_draws)
    return (float(method.mean() - other.mean()), *_percentiles(method_means - other_means, level))
