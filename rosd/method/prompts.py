"""Prompt building: the student's, the reflector's and the self-teacher's chat messages (docs/method.md,
"Reflection" and "Teacher prompt").

The templates are the ones the reference runs: its Hydra config
(``verl/trainer/config/actor/actor.yaml``, ``self_distillation:``), not the dataclass defaults in
``verl/workers/config/actor.py`` that never reach its trainer. YAML ``|-`` blocks: no trailing newline.

Every prompt is a list of chat messages; `chat_prompt_ids` turns one into token ids through the
tokenizer's own chat template, so the student, reflector and teacher all share one template.
"""

from __future__ import annotations

import re

TUTOR_SYSTEM = "You are a careful tutor. Respond strictly in the required format and nothing else."
REFLECT_WRONG = (
    "{prompt}\n\n"
    "[Correct Solution]\n{correct_solution}\n\n"
    "[Incorrect Solution]\n{wrong_solution}\n\n"
    "The correct final answer is {answer}. Diagnose the [Incorrect Solution] by responding strictly in "
    "the following format:\n\n"
    "<error_quote>\n"
    "(Extract the EXACT substring from the [Incorrect Solution] where the reasoning first goes wrong)\n"
    "</error_quote>\n"
    "<explanation>\n"
    "(Explain the exact mistake in the quote, how to fix it, and what the correct logic is)\n"
    "</explanation>"
)
REFLECT_CORRECT = (
    "{prompt}\n\n"
    "[Correct Solution]\n{correct_solution}\n\n"
    "Explain why this reasoning is valid and why the final answer should be {answer}.\n"
    "Respond strictly in the following format:\n"
    "<explanation>\n"
    "(Your explanation of why the logic is correct)\n"
    "</explanation>"
)
# The teacher's user turn (ref: teacher_reprompt_template_with_reflection / reprompt_template, with
# the reflection and solution sections already substituted; feedback is empty for these tasks).
TEACHER_WITH_REFLECTION = "{prompt}\n\n\nThe following is the key idea to solve the question:\n\n{reflection}"
TEACHER_WITH_SOLUTION = "{prompt}\nCorrect solution:\n\n{solution}"
TEACHER_INSTRUCTION = "\n\nCorrectly solve the original question."
# The ablation `rosd_solution_and_reflection`: both sections, the solution first.
TEACHER_WITH_BOTH = "{prompt}\nCorrect solution:\n\n{solution}\n\n\nThe following is the key idea to solve the question:\n\n{reflection}"
# OPSD (arXiv 2601.18734, its data_collator.py): the dataset's reference solution and its transition
# prompt. OPSD's closing boxed-answer line is left out: every rosd task prompt ends with its own
# answer-format instruction, which the teacher has already read in {prompt}.
OPSD_TEACHER = (
    "Problem: {prompt}\n\n"
    "Here is a reference solution to this problem:\n"
    "=== Reference Solution Begin ===\n{solution}\n=== Reference Solution End ===\n"
    "\n\nAfter reading the reference solution above, make sure you truly understand the reasoning behind "
    "each step — do not copy or paraphrase it. Now, using your own words and independent reasoning, "
    "derive the same final answer to the problem above. Think step by step, explore different approaches, "
    "and don't be afraid to backtrack or reconsider if something doesn't work out:\n"
)

_THINKING = re.compile(r"<think>.*?</think>\s*", re.DOTALL)


def _with_system(system: str | None, user: str) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}]


def student_messages(task: dict) -> list[dict]:
    """The task as the student (and the evaluated model) sees it."""
    return _with_system(task.get("system"), task["prompt"])


def remove_thinking(text: str) -> str:
    """A demonstration without its ``<think>…</think>`` spans (ref: remove_thinking_from_demonstration)."""
    return _THINKING.sub("", text)


def reflection_messages(task: dict, response: str, *, correct: bool, sibling: str | None) -> list[dict]:
    """The self-reflector's prompt for one rollout (tutor system message + one user turn): diagnose
    a wrong rollout against its sibling solution, or explain why a correct one is right. ``{prompt}``
    is the task's raw user content, without its system message (ref)."""
    answer = str(task["answer"])
    if correct:
        user = REFLECT_CORRECT.format(prompt=task["prompt"], correct_solution=response, answer=answer)
    else:
        if sibling is None:
            raise ValueError("a wrong rollout is reflected on only against a sibling solution")
        user = REFLECT_WRONG.format(prompt=task["prompt"], correct_solution=sibling, wrong_solution=response, answer=answer)
    return [{"role": "system", "content": TUTOR_SYSTEM}, {"role": "user", "content": user}]


def teacher_messages(task: dict, *, solution: str | None, reflection: str | None, wording: str = "reference") -> list[dict]:
    """The self-teacher's prompt: the task's system message, then one user turn.

    ``wording="reference"``: the reflection template when there is a reflection, else the solution
    template, else the bare prompt; with both, the ablation's template (solution, then reflection).
    ``wording="opsd"``: OPSD's reference-solution template. The error quote is never shown (ref).
    """
    prompt = task["prompt"]
    if wording == "opsd":
        user = OPSD_TEACHER.format(prompt=prompt, solution=solution) if solution else prompt
    elif solution and reflection:
        user = TEACHER_WITH_BOTH.format(prompt=prompt, solution=solution, reflection=reflection) + TEACHER_INSTRUCTION
    elif reflection:
        user = TEACHER_WITH_REFLECTION.format(prompt=prompt, reflection=reflection) + TEACHER_INSTRUCTION
    elif solution:
        user = TEACHER_WITH_SOLUTION.format(prompt=prompt, solution=solution) + TEACHER_INSTRUCTION
    else:
        user = prompt
    return _with_system(task.get("system"), user)


def chat_prompt_ids(tokenizer, messages: list[dict], enable_thinking: bool = False) -> list[int]:
    """Token ids of ``messages`` rendered by the tokenizer's chat template, ready for the reply.

    Rendering to text and encoding without extra special tokens keeps the ids identical across
    transformers versions (v5's ``tokenize=True`` returns a dict).
    """
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fit_user_message(tokenizer, messages: list[dict], max_tokens: int | None, enable_thinking: bool = False) -> tuple[list[dict], int]:
    """Cut the last message's content from its end until the templated prompt fits ``max_tokens``
    (ref: ``_truncate_reflection_message_for_rollout``): returns (messages, user tokens removed).

    As the reference: encode the user content, drop the overflow plus 8 tokens (at least one) per
    pass, decode without special tokens, re-template, until it fits or one token is left.
    """
    if max_tokens is None:
        return messages, 0
    messages = [dict(m) for m in messages]
    user_ids = tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]
    original = len(user_ids)
    while user_ids:
        length = len(chat_prompt_ids(tokenizer, messages, enable_thinking))
        if length <= max_tokens or len(user_ids) <= 1:
            break
        keep = max(1, len(user_ids) - (length - max_tokens) - 8)
        user_ids = user_ids[: min(keep, len(user_ids) - 1)]
        messages[-1]["content"] = tokenizer.decode(user_ids, skip_special_tokens=True)
    return messages, original - len(user_ids)
