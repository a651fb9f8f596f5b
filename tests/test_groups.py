"""Group filter, sibling solutions and GRPO advantages (SPEC §1.3-1.4)."""

import pytest

from rosd.stages.distill import group_advantages, step_updates
from rosd.stages.reflect import mark_groups, teacher_context


def rollouts(rewards_by_group):
    return [
        {"group": g, "response": f"g{g}s{j}", "reward": float(r), "task": {"solution": f"ref{g}"}}
        for g, rewards in enumerate(rewards_by_group)
        for j, r in enumerate(rewards)
    ]


def test_zero_variance_filter_drops_all_right_and_all_wrong_groups():
    rows = rollouts([[1, 0, 1], [1, 1, 1], [0, 0, 0]])
    mark_groups(rows)
    assert [r["in_loss"] for r in rows] == [True] * 3 + [False] * 6


def test_without_the_filter_only_groups_without_success_are_skipped():
    rows = rollouts([[1, 1], [0, 0]])
    mark_groups(rows, group_filter="none")
    assert [r["in_loss"] for r in rows] == [True, True, False, False]
    mark_groups(rows, group_filter="none", skip_no_success=False)
    assert all(r["in_loss"] for r in rows)


def test_sibling_is_the_first_other_correct_rollout():
    rows = rollouts([[0, 1, 1, 0]])
    mark_groups(rows)
    assert [r["sibling"] for r in rows] == ["g0s1", "g0s2", "g0s1", "g0s1"]


def test_the_only_correct_rollout_has_no_sibling():
    rows = rollouts([[0, 1, 0]])
    mark_groups(rows)
    assert rows[1]["sibling"] is None


def test_random_sibling_is_seeded_and_never_the_rollout_itself():
    rows = rollouts([[1, 1, 1, 0]])
    mark_groups(rows, sibling="random", seed=3)
    first = [r["sibling"] for r in rows]
    mark_groups(rows, sibling="random", seed=3)
    assert [r["sibling"] for r in rows] == first
    assert all(r["sibling"] != r["response"] for r in rows)


@pytest.mark.parametrize(
    "context, expected",
    [
        ("solution+reflection", ("g0s1", "fix step 2")),
        ("reflection", (None, "fix step 2")),
        ("solution", ("g0s1", None)),
        ("reference", ("ref0", None)),
    ],
)
def test_teacher_context_variants(context, expected):
    rows = rollouts([[0, 1]])
    mark_groups(rows)
    rows[0]["explanation"] = "fix step 2"
    assert teacher_context(rows[0], context) == expected


def test_grpo_advantage_is_reward_minus_group_mean_without_std_scaling():
    rows = rollouts([[1, 0, 0, 0], [1, 1, 0, 0]])
    group_advantages(rows)
    assert [r["advantage"] for r in rows] == [0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5]


def test_grpo_splits_the_step_into_mini_batch_updates():
    rows = list(range(10))
    method = {"objective": "grpo", "grpo": {"updates_per_batch": 4}}
    assert [len(r) for r, _ in step_updates(rows, None, method)] == [3, 3, 3, 1]
    assert step_updates(rows, ["t"] * 10, {"objective": "distill"}) == [(rows, ["t"] * 10)]
