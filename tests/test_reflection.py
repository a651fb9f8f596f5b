"""Reflection parsing and the quote -> first-loss-token mapping (docs/method.md, "Reflection" and "Token mask")."""

from pathlib import Path

import pytest

from rosd.method.reflection import (
    find_quote,
    loss_start,
    parse_reflection,
    token_at_char,
)
from rosd.world.first_error import quote_line_offset, true_error_hit

THETA0 = Path(__file__).resolve().parent.parent / "rosd" / "world" / "theta0"


def test_parse_reads_first_tags_case_insensitively_and_strips():
    text = "<ERROR_QUOTE>  8 - 2 = 5 </error_quote>\n<explaination> 8 - 2 is 6 </explaination><error_quote>x</error_quote>"
    parsed = parse_reflection(text)
    assert parsed.error_quote == "8 - 2 = 5"
    assert parsed.explanation == "8 - 2 is 6"
    assert parsed.parsed


def test_parse_accepts_the_correct_spelling_and_treats_empty_as_absent():
    parsed = parse_reflection("<error_quote>  </error_quote><explanation>fix it</explanation>")
    assert parsed.error_quote is None
    assert parsed.explanation == "fix it"


@pytest.mark.parametrize(
    "text, explanation",
    [
        ("<reflection>X</reflection>", "X"),  # the third fallback
        ("<explaination>  </explaination><explanation>Y</explanation>", "Y"),  # empty falls through
        ("<explanation>A</explanation><explaination>B</explaination>", "B"),  # the reference's spelling first
        ("<explanation>A</explanation><reflection>C</reflection>", "A"),
        ("<explanation>X</explaination>", None),  # open and close tags must agree
    ],
)
def test_explanation_tags_are_searched_in_the_reference_order(text, explanation):
    """ref ray_trainer.py _extract_reflection_fields: explaination, then explanation, then reflection."""
    assert parse_reflection(text).explanation == explanation


def test_unparsable_reflection_yields_none():
    parsed = parse_reflection("I think step two is wrong.")
    assert parsed.error_quote is None and parsed.explanation is None and not parsed.parsed


def test_find_quote_first_occurrence_and_stripped_fallback():
    response = "a = 1\nb = 2\na = 1\n"
    assert find_quote(response, "a = 1") == 0
    assert find_quote(response, "b = 2") == 6
    assert find_quote(response, "  b = 2 \n") == 6
    assert find_quote(response, "c = 3") is None
    assert find_quote(response, None) is None


TASK = {"steps": ["6 + 9 = 15", "15 - 4 = 11", "The answer is \\boxed{11}."]}
WRONG = "6 + 9 = 15\n15 - 4 = 12\nThe answer is \\boxed{12}."  # the first error is line 2


@pytest.mark.parametrize(
    "quote, offset, hit",
    [
        ("15 - 4 = 12", 0, True),  # the first wrong line
        ("4 = 12", 0, True),  # starts inside it
        ("6 + 9 = 15", -1, False),  # a line that was still right
        ("\\boxed{12}", 1, False),  # where the error showed, one line later
        ("7 + 9 = 15", None, None),  # not in the response
    ],
)
def test_quote_line_offset_counts_lines_from_the_true_first_error(quote, offset, hit):
    row = {"reward": 0.0, "task": TASK, "response": WRONG, "quote_char": find_quote(WRONG, quote)}
    assert quote_line_offset(row) == offset
    assert true_error_hit(row) is hit


def test_quote_line_offset_is_none_without_a_wrong_world_rollout():
    wrong = {"reward": 0.0, "task": TASK, "response": WRONG, "quote_char": 0}
    assert quote_line_offset({**wrong, "reward": 1.0}) is None
    assert quote_line_offset({**wrong, "task": {"steps": None}}) is None  # not a world task
    right = "\n".join(TASK["steps"])
    assert quote_line_offset({**wrong, "response": right}) is None  # nothing deviates


@pytest.fixture(scope="module")
def tokenizer():
    from rosd.models.loading import load_tokenizer

    return load_tokenizer(str(THETA0))


RESPONSE = "3 + 5 = 8\n8 - 2 = 5\n5 + 4 = 9\nThe answer is \\boxed{9}."


def _assert_token_holds(tokenizer, ids, index, offset):
    before = len(tokenizer.decode(ids[:index]))
    through = len(tokenizer.decode(ids[: index + 1]))
    assert before <= offset < through


@pytest.mark.parametrize(
    "quote",
    ["3 + 5 = 8", "8 - 2 = 5", "\\boxed{9}.", "9}.", "nswer is", "  8 - 2 = 5  "],
    ids=["at-start", "middle-line", "at-end", "last-chars", "inside-a-token", "padded"],
)
def test_quote_maps_to_the_token_holding_its_first_character(tokenizer, quote):
    ids = tokenizer(RESPONSE, add_special_tokens=False)["input_ids"]
    offset = find_quote(RESPONSE, quote)
    index = loss_start(tokenizer, RESPONSE, ids, quote)
    _assert_token_holds(tokenizer, ids, index, offset)


def test_quote_at_start_maps_to_token_zero(tokenizer):
    ids = tokenizer(RESPONSE, add_special_tokens=False)["input_ids"]
    assert loss_start(tokenizer, RESPONSE, ids, "3 + 5") == 0


def test_repeated_quote_maps_to_first_occurrence(tokenizer):
    response = "1 + 1 = 2\n2 + 0 = 2\n1 + 1 = 2"
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    assert loss_start(tokenizer, response, ids, "1 + 1 = 2") == 0
    index = loss_start(tokenizer, response, ids, "2 + 0")
    _assert_token_holds(tokenizer, ids, index, 10)


def test_absent_quote_distills_everything(tokenizer):
    ids = tokenizer(RESPONSE, add_special_tokens=False)["input_ids"]
    assert loss_start(tokenizer, RESPONSE, ids, "7 * 7 = 49") == 0
    assert loss_start(tokenizer, RESPONSE, ids, None) == 0


def test_reference_mapping_counts_retokenized_prefix(tokenizer):
    ids = tokenizer(RESPONSE, add_special_tokens=False)["input_ids"]
    offset = RESPONSE.index("8 - 2")
    expected = len(tokenizer(RESPONSE[:offset], add_special_tokens=False)["input_ids"])
    assert loss_start(tokenizer, RESPONSE, ids, "8 - 2 = 5", mapping="retokenize") == expected


def test_offsets_mapping_uses_the_sampled_ids_not_a_retokenization(tokenizer):
    # Sampled ids need not be the canonical tokenization: spell every character as its own token.
    pieces = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in RESPONSE]
    ids = [i for piece in pieces for i in piece]
    assert tokenizer.decode(ids) == RESPONSE
    offset = RESPONSE.index("5 + 4")
    assert token_at_char(tokenizer, ids, offset) == sum(len(p) for p in pieces[:offset])
