"""Evaluation metrics over per-sample correctness (docs/method.md, "Metrics"): mean@k, unbiased pass@k, maj@k.

Pure Python on purpose: the aggregate and tracking stages import this without torch, and every
metric can be recomputed from the per-sample records the evaluate stage keeps on disk.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence


def _check_int(name: str, value: int, minimum: int) -> None:
    # bool is an int subclass; a True/False here is always a caller bug
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials.
    """
    _check_int("n", n, 1)
    _check_int("c", c, 0)
    _check_int("k", k, 1)
    if c > n:
        raise ValueError(f"c={c} correct samples out of n={n}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least k samples, got n={n}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def mean_at_k(correct_by_problem: Sequence[Sequence[int]]) -> float:
    """Per-problem mean correctness, averaged over problems (each problem weighs the same)."""
    if not correct_by_problem:
        raise ValueError("mean@k of no problems")
    if any(len(samples) == 0 for samples in correct_by_problem):
        raise ValueError("a problem has no samples")
    return sum(sum(s) / len(s) for s in correct_by_problem) / len(correct_by_problem)


def maj_at_k(answers_by_problem: Sequence[Sequence[tuple[str | None, int]]], k: int) -> float:
    """Majority-vote accuracy over the first k samples of each problem.

    Each problem is a list of ``(extracted_answer, correct)`` pairs in sample order. The vote
    ignores samples with no extracted answer (None); ties go to the answer seen first. The
    problem counts as solved when the winning answer's first sample was graded correct
    (a problem with no extracted answer at all is unsolved).
    """
    _check_int("k", k, 1)
    if not answers_by_problem:
        raise ValueError("maj@k of no problems")
    solved = 0
    for samples in answers_by_problem:
        if len(samples) < k:
            raise ValueError(f"maj@{k} needs at least k samples, got {len(samples)}")
        votes = Counter(answer for answer, _ in samples[:k] if answer is not None)
        if not votes:
            continue
        top = max(votes.values())
        # Counter keeps first-insertion order, so the first answer with the top count wins
        winner = next(answer for answer, count in votes.items() if count == top)
        solved += next(int(correct) for answer, correct in samples[:k] if answer == winner)
    return solved / len(answers_by_problem)


def pass_ks(k: int) -> list[int]:
    """The pass@j levels reported for k samples: every j from 1 to k (the whole pass@k curve)."""
    _check_int("k", k, 1)
    return list(range(1, k + 1))


def summarize(records: Sequence[dict], k: int) -> dict:
    """Summary of per-sample records ``{"id", "sample", "correct"[, "extracted"]}``.

    Records are grouped by id and ordered by sample index. Every problem must have the same
    number n >= k of samples: mean@k and maj@k use the first k, pass@j the unbiased estimator
    over all n. maj_at_k is present only when every record carries an "extracted" key.
    """
    _check_int("k", k, 1)
    by_id: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_id[str(record["id"])].append(record)
    if not by_id:
        raise ValueError("no records to summarize")
    problems = [sorted(group, key=lambda r: r["sample"]) for group in by_id.values()]
    counts = {len(group) for group in problems}
    if len(counts) != 1:
        raise ValueError(f"problems have different sample counts: {sorted(counts)}")
    n = counts.pop()
    if n < k:
        raise ValueError(f"k={k} but only {n} samples per problem")

    correct = [[int(r["correct"]) for r in group] for group in problems]
    summary = {
        "n_problems": len(problems),
        "samples_per_problem": n,
        "k": k,
        "mean_at_k": mean_at_k([c[:k] for c in correct]),
    }
    for j in pass_ks(k):
        summary[f"pass_at_{j}"] = sum(pass_at_k(n, sum(c), j) for c in correct) / len(correct)
    if all("extracted" in r for r in records):
        pairs = [[(r["extracted"], int(r["correct"])) for r in group] for group in problems]
        summary["maj_at_k"] = maj_at_k(pairs, k)
    return summary
