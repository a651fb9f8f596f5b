"""Group filter, sibling solutions and GRPO advantages (docs/method.md, "Groups")."""

import pytest

from rosd.method.groups import group_advantages, mark_groups, teacher_context
from rosd.method.objective import step_updates


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
    "context, parsed, expected",
    [
        # ref rosd: the reflection replaces the sibling solution when it parsed, else the solution
        ("reflection_else_solution", True, (None, "fix step 2")),
        ("reflection_else_solution", False, ("g0s1", None)),
        ("solution_and_reflection", True, ("g0s1", "fix step 2")),
        ("reflection", True, (None, "fix step 2")),
        ("reflection", False, (None, None)),
        ("solution", True, ("g0s1", None)),
        ("reference", True, ("ref0", None)),
    ],
)
def test_teacher_context_variants(context, parsed, expected):
    rows = rollouts([[0, 1]])
    mark_groups(rows)
    rows[0]["explanation"] = "fix step 2" if parsed else None
    assert teacher_context(rows[0], context) == expected


def test_a_lone_correct_rollout_has_a_teacher_only_through_its_reflection():
    """ref ray_trainer.py:1249-1260: a rollout whose teacher reads neither a reflection nor a
    solution gets per-sample mask 0 (under sdpo every lone correct rollout)."""
    rows = rollouts([[0, 1, 0]])
    mark_groups(rows)
    lone = rows[1]
    assert teacher_context(lone, "solution") == (None, None)
    lone["explanation"] = None
    assert teacher_context(lone, "reflection_else_solution") == (None, None)
    lone["explanation"] = "the sum is right"
    assert teacher_context(lone, "reflection_else_solution") == (None, "the sum is right")


def test_sibling_demonstrations_lose_their_thinking():
    rows = rollouts([[0, 1]])
    rows[1]["response"] = "<think>hmm</think>\n3 + 5 = 8"
    mark_groups(rows)
    assert rows[0]["sibling"] == "3 + 5 = 8"


def test_grpo_advantage_is_reward_minus_group_mean_without_std_scaling():
    rows = rollouts([[1, 0, 0, 0], [1, 1, 0, 0]])
    group_advantages(rows)
    assert [r["advantage"] for r in rows] == [0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5]


def test_grpo_preset_keeps_zero_variance_groups_with_zero_advantage():
    from rosd.method.presets import PRESETS

    train = PRESETS["grpo"]["train"]
    rows = rollouts([[1, 1], [1, 0]])
    mark_groups(rows, group_filter=train["group_filter"], skip_no_success=train["skip_no_success"])
    group_advantages(rows)
    assert all(r["in_loss"] for r in rows)
    assert [r["advantage"] for r in rows] == [0.0, 0.0, 0.5, -0.5]


def test_grpo_splits_the_step_into_mini_batch_updates():
    rows = list(range(10))
    method = {"objective": "grpo", "grpo": {"updates_per_batch": 4}}
    assert [len(r) for r, _ in step_updates(rows, None, method)] == [3, 3, 3, 1]
    assert step_updates(rows, ["t"] * 10, {"objective": "distill"}) == [(rows, ["t"] * 10)]
