"""Verifiers graded as SPEC §4 describes the reference grading."""

import json

import pytest

from rosd.grading import extract_answer, last_boxed, score


@pytest.mark.parametrize(
    "response, answer, expected",
    [
        ("3 + 5 = 8\nThe answer is \\boxed{8}.", "8", 1.0),
        ("\\boxed{19}", "19", 1.0),
        ("\\boxed{ 19 }", "19", 1.0),
        ("first \\boxed{7} then \\boxed{8}", "8", 1.0),  # the last box counts
        ("first \\boxed{8} then \\boxed{7}", "8", 0.0),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1.0),  # nested braces
        ("no box here: 8", "8", 0.0),
        ("\\boxed{8", "8", 0.0),  # unbalanced
    ],
)
def test_math(response, answer, expected):
    assert score("math", response, answer) == expected


def test_last_boxed_skips_an_unbalanced_final_box():
    assert last_boxed("\\boxed{3} and \\boxed{4") == "3"


@pytest.mark.parametrize(
    "response, expected",
    [
        ("<reasoning>x</reasoning>\n<answer>\nB\n</answer>", 1.0),
        ("<answer>A</answer> changed my mind <answer> B </answer>", 1.0),
        ("<answer>B</answer><answer>C</answer>", 0.0),
        ("<answer>B", 0.0),
        ("B", 0.0),
    ],
)
def test_mcq(response, expected):
    assert score("mcq", response, "B") == expected


GOLD = json.dumps(
    [
        {"Action": "add", "Action_Input": json.dumps({"a": 3, "b": 5})},
        {"Action": "note", "Action_Input": json.dumps({"text": "hi"})},
    ]
)


@pytest.mark.parametrize(
    "response, expected",
    [
        ('Action: add\nAction Input: {"a": 3, "b": 5}\nAction: note\nAction Input: {"text": "hi"}', 1.0),
        ('Action: note\nAction Input: {"text": "hi"}\nAction: add\nAction Input: {"b": 5, "a": 3}', 1.0),
        ('Action: add\nAction Input: {"a": 3, "b": 5}', 0.0),  # missing action
        ('Action: add\nAction Input: {"a": 3, "b": 5}\nAction: note\nAction Input: {"text": "hi"}\nAction: add', 0.0),
        ('Action: add\nAction Input: {"a": 3, "b": 6}\nAction: note\nAction Input: {"text": "hi"}', 0.0),  # changed arg
        ("Action: add\nAction Input: {not json}\nAction: note", 0.0),
    ],
)
def test_tooluse(response, expected):
    assert score("tooluse", response, GOLD) == expected


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task kind 'essay'"):
        score("essay", "x", "y")


def test_extract_answer_is_canonical_for_voting():
    assert extract_answer("math", "\\boxed{ 8 }") == "8"
    assert extract_answer("mcq", "<answer> C </answer>") == "C"
    a = extract_answer("tooluse", 'Action: add\nAction Input: {"a": 1, "b": 2}')
    b = extract_answer("tooluse", 'Action: add\nAction Input: {"b": 2, "a": 1}')
    assert a == b and a is not None
    assert extract_answer("math", "nothing") is None
