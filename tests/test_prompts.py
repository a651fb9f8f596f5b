"""The reflector's and the teacher's prompts are the reference's run-time templates (docs/method.md, "Reflection" and "Teacher prompt"):
the strings below are written out by hand from its Hydra config (verl/trainer/config/actor/actor.yaml,
`self_distillation:`) and ray_trainer.py's _build_teacher_message."""

from rosd.method.prompts import fit_user_message, reflection_messages, teacher_messages

TASK = {"system": "Answer in \\boxed{}.", "prompt": "Compute 3 + 5.", "answer": "8", "kind": "math"}
TUTOR = "You are a careful tutor. Respond strictly in the required format and nothing else."


def test_wrong_rollout_reflection_prompt_is_the_reference_template():
    messages = reflection_messages(TASK, "3 + 5 = 9\n\\boxed{9}", correct=False, sibling="3 + 5 = 8\n\\boxed{8}")
    assert messages == [
        {"role": "system", "content": TUTOR},
        {
            "role": "user",
            "content": "Compute 3 + 5.\n\n[Correct Solution]\n3 + 5 = 8\n\\boxed{8}\n\n[Incorrect Solution]\n3 + 5 = 9\n\\boxed{9}\n\n"
            "The correct final answer is 8. Diagnose the [Incorrect Solution] by responding strictly in the following format:\n\n"
            "<error_quote>\n(Extract the EXACT substring from the [Incorrect Solution] where the reasoning first goes wrong)\n"
            "</error_quote>\n<explanation>\n(Explain the exact mistake in the quote, how to fix it, and what the correct logic is)\n"
            "</explanation>",
        },
    ]


def test_correct_rollout_reflection_prompt_gives_the_gold_answer():
    messages = reflection_messages(TASK, "3 + 5 = 8\n\\boxed{8}", correct=True, sibling=None)
    assert messages == [
        {"role": "system", "content": TUTOR},
        {
            "role": "user",
            "content": "Compute 3 + 5.\n\n[Correct Solution]\n3 + 5 = 8\n\\boxed{8}\n\n"
            "Explain why this reasoning is valid and why the final answer should be 8.\n"
            "Respond strictly in the following format:\n<explanation>\n(Your explanation of why the logic is correct)\n</explanation>",
        },
    ]


def test_teacher_with_a_reflection_reads_it_instead_of_the_solution():
    assert teacher_messages(TASK, solution=None, reflection="Add carefully.") == [
        {"role": "system", "content": "Answer in \\boxed{}."},
        {"role": "user", "content": "Compute 3 + 5.\n\n\nThe following is the key idea to solve the question:\n\nAdd carefully.\n\nCorrectly solve the original question."},
    ]


def test_teacher_with_only_a_solution():
    assert teacher_messages(TASK, solution="3 + 5 = 8", reflection=None)[-1]["content"] == (
        "Compute 3 + 5.\nCorrect solution:\n\n3 + 5 = 8\n\nCorrectly solve the original question."
    )


def test_teacher_without_context_reads_the_bare_prompt():
    assert teacher_messages(TASK, solution=None, reflection=None) == [
        {"role": "system", "content": "Answer in \\boxed{}."},
        {"role": "user", "content": "Compute 3 + 5."},
    ]


def test_the_ablation_shows_both_solution_then_reflection():
    assert teacher_messages(TASK, solution="3 + 5 = 8", reflection="Add carefully.")[-1]["content"] == (
        "Compute 3 + 5.\nCorrect solution:\n\n3 + 5 = 8\n\n\nThe following is the key idea to solve the question:\n\n"
        "Add carefully.\n\nCorrectly solve the original question."
    )


def test_opsd_teacher_uses_opsd_wording():
    user = teacher_messages(TASK, solution="3 + 5 = 8", reflection=None, wording="opsd")[-1]["content"]
    assert user.startswith("Problem: Compute 3 + 5.\n\nHere is a reference solution to this problem:\n"
                           "=== Reference Solution Begin ===\n3 + 5 = 8\n=== Reference Solution End ===\n\n\nAfter reading")
    assert user.endswith("if something doesn't work out:\n")


class CharTokenizer:
    """One token per character; the chat template wraps each message in <role>…</role> and ends
    with <a> — lengths the test can count by hand."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True, enable_thinking=False):
        return "".join(f"<{m['role'][0]}>{m['content']}" for m in messages) + "<a>"


def test_a_long_reflection_prompt_loses_the_end_of_its_user_message():
    # system "S": 3 + 1 tokens; user "<u>" + 100 characters; "<a>": 3 -> 110 tokens in all.
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "x" * 90 + "0123456789"}]
    fitted, removed = fit_user_message(CharTokenizer(), messages, max_tokens=60)
    # ref: overflow 110 - 60 = 50; keep 100 - 50 - 8 = 42 user tokens; then 52 <= 60 fits.
    assert fitted[-1]["content"] == "x" * 42 and removed == 58
    assert fitted[0] == messages[0] and messages[-1]["content"].endswith("0123456789")  # the input is untouched


def test_a_prompt_that_fits_is_not_cut():
    messages = [{"role": "user", "content": "short"}]
    assert fit_user_message(CharTokenizer(), messages, max_tokens=11) == (messages, 0)  # 3 + 5 + 3 = 11
    assert fit_user_message(CharTokenizer(), messages, max_tokens=None) == (messages, 0)


def test_the_cut_goes_on_until_one_token_is_left():
    messages = [{"role": "system", "content": "S" * 50}, {"role": "user", "content": "abcdefghij"}]
    fitted, removed = fit_user_message(CharTokenizer(), messages, max_tokens=20)
    assert fitted[-1]["content"] == "a" and removed == 9
