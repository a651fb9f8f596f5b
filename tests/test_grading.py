"""Verifiers (docs/method.md, "Verifiers"): the reference's readings by default, the lenient ones behind ``mode``.

Expected values are worked out by hand from the reference verifiers
(``verl/utils/reward_score/feedback/{mcq,tooluse,math}.py``). Math cases here are decided without
math-verify; those that need it are in test_math_verify.py.
"""

import json
import random
import re
from collections import Counter

import pytest

from rosd.evaluation import grading
from rosd.evaluation.grading import (
    GRADING_MODES,
    Graded,
    extract_answer,
    gold_tool_calls,
    grade_batch,
    last_boxed,
    math_answer,
    mcq_answer,
    score,
    score_batch,
    tool_calls,
)


def test_modes():
    assert GRADING_MODES == ("reference", "lenient")


# --- multiple choice ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, reference, lenient",
    [
        ("<reasoning>x</reasoning>\n<answer>\nB\n</answer>", 1.0, 1.0),
        ("<answer>A</answer> changed my mind <answer> B </answer>", 1.0, 1.0),  # the last tag counts
        ("<answer>B</answer><answer>C</answer>", 0.0, 0.0),
        ("<answer>B</answer> and some words after", 1.0, 1.0),
        ("<answer>\nB", 1.0, 0.0),  # no closing tag: the reference reads to the end
        ("<answer>B</answer> then <answer>C", 0.0, 0.0),  # the last tag: "C" (ref), unclosed (lenient)
        ("B", 1.0, 0.0),  # no tag: the reference compares the whole text
        ("The answer is B", 0.0, 0.0),
        ("B</answer>", 1.0, 0.0),  # reference: no <answer>, the text up to </answer>
        ("<answer></answer>", 0.0, 0.0),
    ],
)
@pytest.mark.parametrize("mode", GRADING_MODES)
def test_mcq(response, reference, lenient, mode):
    assert score("mcq", response, "B", mode=mode) == {"reference": reference, "lenient": lenient}[mode]


def test_mcq_reference_compares_the_gold_as_given():
    assert score("mcq", "<answer>B</answer>", "B\n", mode="reference") == 0.0
    assert score("mcq", "<answer>B</answer>", "B\n", mode="lenient") == 1.0


def test_mcq_answer_readings():
    assert mcq_answer("<answer> C ") == "C"
    assert mcq_answer("<answer> C ", mode="lenient") is None
    assert mcq_answer("no tag at all ") == "no tag at all"
    assert mcq_answer("no tag at all ", mode="lenient") is None


# --- tool use -----------------------------------------------------------------------------------

GOLD = json.dumps(
    [
        {"Action": "add", "Action_Input": json.dumps({"a": 3, "b": 5})},
        {"Action": "note", "Action_Input": json.dumps({"text": "hi"})},
    ]
)
BOTH = 'Action: add\nAction Input: {"a": 3, "b": 5}\nAction: note\nAction Input: {"text": "hi"}'


@pytest.mark.parametrize(
    "response, reference, lenient",
    [
        (BOTH, 1.0, 1.0),
        ('Action: note\nAction Input: {"text": "hi"}\nAction: add\nAction Input: {"b": 5, "a": 3}', 1.0, 1.0),
        ('Action: add\nAction Input: {"a": 3, "b": 5}', 0.0, 0.0),  # missing action
        (BOTH + "\nAction: add", 0.0, 0.0),  # an extra one
        (BOTH.replace('"b": 5', '"b": 6'), 0.0, 0.0),  # changed argument
        ("Action: add\nAction Input: {not json}\nAction: note", 0.0, 0.0),
        (BOTH + "\nAction Input: {not json}", 1.0, 1.0),  # a block that is not JSON is skipped
        ('Action: add\nAction: note\nAction Input: {"a": 3,\n "b": 5, "text": "hi"}', 1.0, 1.0),  # merged, multi-line
        (BOTH.replace("Action: add", "Action: add (compute 3 + 5)"), 1.0, 0.0),  # \w+ vs the whole line
        (BOTH.replace("Action: add", "Action: add."), 1.0, 0.0),
        (BOTH.replace("Action: add", "Action:add"), 1.0, 1.0),
        (BOTH.replace('"hi"', '"hi"  '), 1.0, 1.0),
        (BOTH.replace('{"text": "hi"}', '{"text": "hi"} trailing } text'), 1.0, 1.0),
        (BOTH.replace('{"text": "hi"}', '{"text": "hi", "x": {"y": 1}}'), 0.0, 0.0),  # ref: skipped; lenient: extra key
    ],
)
@pytest.mark.parametrize("mode", GRADING_MODES)
def test_tooluse(response, reference, lenient, mode):
    assert score("tooluse", response, GOLD, mode=mode) == {"reference": reference, "lenient": lenient}[mode]


def test_action_name_with_arguments_on_its_line():
    gold = json.dumps([{"Action": "getX", "Action_Input": "{}"}])
    assert score("tooluse", "Action: getX (fetch)", gold) == 1.0
    assert score("tooluse", "Action: getX (fetch)", gold, mode="lenient") == 0.0


NESTED = json.dumps([{"Action": "search", "Action_Input": json.dumps({"q": {"city": "Paris"}, "n": 2})}])


def test_nested_gold_input_is_unsolvable_under_the_reference():
    response = 'Action: search\nAction Input: {"q": {"city": "Paris"}, "n": 2}'
    assert score("tooluse", response, NESTED) == 0.0  # {.*?} stops at the first "}": not JSON
    assert score("tooluse", response, NESTED, mode="lenient") == 1.0
    assert tool_calls(response) == (Counter(["search"]), {})


def test_brace_inside_a_string_cuts_the_reference_block():
    gold = json.dumps([{"Action": "say", "Action_Input": json.dumps({"text": "a}b"})}])
    response = 'Action: say\nAction Input: {"text": "a}b"}'
    assert score("tooluse", response, gold) == 0.0
    assert score("tooluse", response, gold, mode="lenient") == 1.0


def test_gold_reading_per_mode():
    padded = json.dumps([{"Action": " add ", "Action_Input": json.dumps({"a": 1})}])
    assert score("tooluse", 'Action: add\nAction Input: {"a": 1}', padded) == 0.0  # names as given
    assert score("tooluse", 'Action: add\nAction Input: {"a": 1}', padded, mode="lenient") == 1.0
    unparsable = json.dumps([{"Action": "add", "Action_Input": "a=1"}, {"Action": "note"}])
    assert gold_tool_calls(unparsable) == (Counter(["add", "note"]), {})  # the reference reads {}
    assert score("tooluse", "Action: add\nAction: note", unparsable) == 1.0
    with pytest.raises(ValueError, match="call 0 has an Action_Input that is not JSON"):
        gold_tool_calls(unparsable, mode="lenient")
    as_objects = [{"Action": "add", "Action_Input": {"a": 1}}]  # a list, inputs already decoded
    assert gold_tool_calls(as_objects) == gold_tool_calls(as_objects, mode="lenient") == (Counter(["add"]), {"a": 1})


@pytest.mark.parametrize(
    "gold, message, modes",
    [
        ("not json", "tool-use gold answer is not JSON", GRADING_MODES),
        ('{"Action": "add"}', "tool-use gold answer is not a list of calls", GRADING_MODES),
        ('[{"name": "add"}]', "tool-use gold call 0 is not an object with an 'Action'", GRADING_MODES),
        ('[{"Action": "add", "Action_Input": "[1, 2]"}]', "call 0 has an Action_Input that is not an object",
         ("reference",)),  # lenient skips a non-object input, as before
    ],
)
def test_bad_tool_gold_is_a_one_line_value_error(gold, message, modes):
    for mode in modes:
        with pytest.raises(ValueError, match=re.escape(message)) as raised:
            score("tooluse", "Action: add", gold, mode=mode)
        assert "\n" not in str(raised.value)


def _reference_tool_calls(text):
    """The reference reading as docs/method.md, "Verifiers" defines it, by its regexes."""
    merged = {}
    for block in re.findall(r"Action Input:\s*({.*?})", text, re.DOTALL):
        try:
            merged.update(json.loads(block))
        except ValueError:
            pass
    return Counter(re.findall(r"Action:\s*(\w+)", text)), merged


def test_reference_tool_reading_matches_the_regexes_on_random_text():
    rng = random.Random(0)
    pieces = ["Action: ", "Action:", "Action Input: ", "Action Input:", "{", "}", '"a"', ":", " 1", ",", "\n",
              "getX", "(fetch)", '"b"', "[", "]", " "]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        assert tool_calls(text) == _reference_tool_calls(text), text


# --- math (decided without math-verify) ---------------------------------------------------------


@pytest.mark.parametrize(
    "response, answer, reference, lenient",
    [
        ("3 + 5 = 8\nThe answer is \\boxed{8}.", "8", 1.0, 1.0),
        ("\\boxed{19}", "19", 1.0, 1.0),
        ("first \\boxed{7} then \\boxed{8}", "8", 1.0, 1.0),  # the last box counts
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1.0, 1.0),  # nested braces
        ("no box here: 8", "8", 0.0, 0.0),
        ("\\boxed{8", "8", 0.0, 0.0),  # unbalanced
        ("\\boxed{}", "8", 0.0, 0.0),  # empty: the reference does not ask math-verify
        ("\\boxed{8}" + "." * 100, "8", 0.0, 1.0),  # reference: only the last 100 characters
        ("\\boxed{8}" + "." * 91, "8", 1.0, 1.0),  # the box ends 100 characters from the end
        ("\\boxed{" + "1" * 95 + "}", "1" * 95, 0.0, 1.0),  # the window cuts "\boxed{" itself
        ("\\boxed{8} and at last \\boxed{9", "8", 0.0, 1.0),  # unbalanced last box: no fallback
        ("\\boxed{8} and at last \\boxed{\\frac{9}", "8", 0.0, 1.0),
    ],
)
@pytest.mark.parametrize("mode", GRADING_MODES)
def test_math(response, answer, reference, lenient, mode):
    assert score("math", response, answer, mode=mode) == {"reference": reference, "lenient": lenient}[mode]


def test_lenient_math_strips_and_compares_integers_by_value():
    # the reference hands these to math-verify (test_math_verify.py)
    assert score_batch([("math", "\\boxed{008}", "8"), ("math", "\\boxed{ 8 }", " 8")], mode="lenient") == [1.0, 1.0]


def test_math_answer_readings():
    assert math_answer("\\boxed{3} and \\boxed{4") == ""  # reference: unbalanced, no fallback
    assert math_answer("\\boxed{3} and \\boxed{4", mode="lenient") == "3"
    assert math_answer("\\boxed{3}" + " " * 100) is None
    assert math_answer("\\boxed{ 3 }") == " 3 "  # the reference compares unstripped


def test_last_boxed_skips_an_unbalanced_final_box():
    assert last_boxed("\\boxed{3} and \\boxed{4") == "3"
    assert last_boxed("\\boxed{\\boxed{5}} \\boxed{") == "5"  # the inner box opens last
    assert last_boxed("} \\boxed{x}}{") == "x"
    assert last_boxed("\\boxed") is None


def _naive_last_boxed(text):
    """The lenient reading by its definition: from the last box back, the first whose braces balance."""
    for start in sorted((m.start() for m in re.finditer(re.escape("\\boxed{"), text)), reverse=True):
        depth = 0
        for j in range(start + len("\\boxed"), len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[start + len("\\boxed{") : j]
    return None


def _naive_reference_box(text):
    """The reference reading by its definition: the last box of the last 100 characters, "" if open."""
    tail = text[-100:]
    start = tail.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for j in range(start + len("\\boxed"), len(tail)):
        depth += {"{": 1, "}": -1}.get(tail[j], 0)
        if depth == 0:
            return tail[start + len("\\boxed{") : j]
    return ""


def test_box_readings_match_their_definitions_on_random_text():
    rng = random.Random(0)
    pieces = ["\\boxed{", "{", "}", "x", "1", " ", "\\boxed", "." * 30]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        assert last_boxed(text) == _naive_last_boxed(text), text
        assert math_answer(text) == _naive_reference_box(text), text


# --- inputs, errors, extraction -----------------------------------------------------------------


@pytest.mark.parametrize("mode", GRADING_MODES)
def test_none_and_bytes_responses(mode):
    for kind, answer in [("math", "8"), ("mcq", "B"), ("tooluse", GOLD)]:
        assert score(kind, None, answer, mode=mode) == 0.0
        assert extract_answer(kind, None, mode=mode) is None
    assert score("mcq", b"<answer>B</answer>\xff\xfe", "B", mode=mode) == 1.0  # invalid UTF-8 replaced
    assert score("math", b"\x80\\boxed{8}", "8", mode=mode) == 1.0
    assert score("tooluse", BOTH.encode() + b"\xc3", GOLD, mode=mode) == 1.0
    assert score("mcq", "\udcff<answer>B</answer>", "B", mode=mode) == 1.0  # a lone surrogate
    assert score_batch([("mcq", None, "B"), ("mcq", b"\xff", "B")], mode=mode) == [0.0, 0.0]


def test_unknown_kind_or_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task kind 'essay'"):
        score("essay", "x", "y")
    with pytest.raises(ValueError, match="unknown grading mode 'strict'; expected one of reference, lenient"):
        score("mcq", "x", "y", mode="strict")
    with pytest.raises(ValueError, match="unknown grading mode"):
        extract_answer("mcq", "x", mode="strict")


@pytest.mark.parametrize("mode", GRADING_MODES)
def test_extract_answer_is_canonical_for_voting(mode):
    assert extract_answer("math", "\\boxed{ 8 }", mode=mode) == "8"
    assert extract_answer("mcq", "<answer> C </answer>", mode=mode) == "C"
    a = extract_answer("tooluse", 'Action: add\nAction Input: {"a": 1, "b": 2}', mode=mode)
    b = extract_answer("tooluse", 'Action: add\nAction Input: {"b": 2, "a": 1}', mode=mode)
    assert a == b and a is not None
    assert extract_answer("math", "nothing", mode=mode) is None
    assert extract_answer("tooluse", "no action", mode=mode) is None


def test_extract_answer_follows_the_mode():
    late = "\\boxed{8}" + "." * 100
    assert (extract_answer("math", late), extract_answer("math", late, mode="lenient")) == (None, "8")
    assert extract_answer("math", "\\boxed{8} \\boxed{9") is None  # unbalanced: no answer
    assert (extract_answer("mcq", "<answer>\nA"), extract_answer("mcq", "<answer>\nA", mode="lenient")) == ("A", None)
    assert json.loads(extract_answer("tooluse", "Action: getX (fetch)"))[0] == ["getX"]
    assert json.loads(extract_answer("tooluse", "Action: getX (fetch)", mode="lenient"))[0] == ["getX (fetch)"]


# --- bounded grading ----------------------------------------------------------------------------

MB = 1 << 20
PATHOLOGICAL = {
    "open boxes": "\\boxed{" * (MB // 7),  # the old last-box search rescanned from each one
    "a closed box, then open ones": "\\boxed{1}" + "\\boxed{" * (MB // 7),
    "open braces after a box": "\\boxed{" + "{" * (MB // 4),
    "open action inputs": "Action Input: {" * (MB // 15),  # the old raw_decode at each one
    "inputs inside a string": 'Action Input: {"a": "' + 'Action Input: {\\"x\\": ' * (MB // 24),
    "unclosed nesting": 'Action Input: {"a": ' + "[" * (MB // 4) + "}",
    "actions": "Action: " * (MB // 8),
    "answer tags": "<answer>" * (MB // 8),
}


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
@pytest.mark.parametrize("mode", GRADING_MODES)
def test_reading_work_is_linear(name, mode):
    """Each reading does at most a unit of work per character (counted by the readers themselves:
    one per brace visited, one per character decoded), where the old readings did one per
    character for every open box or input."""
    text = PATHOLOGICAL[name]
    for kind in ("math", "tooluse", "mcq"):
        budget = grading._Budget()
        gold = '[{"Action": "x"}]' if kind == "tooluse" else "1"
        grading._grade_in_process(kind, text, gold, mode, budget)
        assert budget.work <= 2 * len(text) + 10, (kind, budget.work)


def test_megabyte_responses_are_graded():
    items = [(kind, text, '[{"Action": "x"}]' if kind == "tooluse" else "1")
             for text in (PATHOLOGICAL["open boxes"], PATHOLOGICAL["open action inputs"])
             for kind in ("math", "tooluse", "mcq")]
    for mode in GRADING_MODES:
        assert grade_batch(items, mode=mode) == Graded([0.0] * len(items), 0)


def test_a_sample_past_its_deadline_scores_zero_and_is_counted(monkeypatch):
    gold = json.dumps([{"Action": "add", "Action_Input": json.dumps({"a": 1})}])
    slow = 'Action: add\nAction Input: {"a": 1}\n' + "Action Input: [1]\n" * 20_000  # ~100k units of work
    items = [("mcq", "<answer>B</answer>", "B"), ("tooluse", slow, gold), ("mcq", "<answer>B</answer>", "B")]
    assert grade_batch(items, mode="lenient") == Graded([1.0, 1.0, 1.0], 0)
    ticks = iter(range(10**9))
    monkeypatch.setattr(grading, "_clock", lambda: float(next(ticks)))  # a second per look at the clock
    assert grade_batch(items, mode="lenient", timeout=10) == Graded([1.0, 0.0, 1.0], 1)
    assert score_batch(items, mode="lenient", timeout=10) == [1.0, 0.0, 1.0]
