"""Prompt building: the student's, the reflector's and the self-teacher's chat messages (SPEC §1.5-1.6).

Every prompt is a list of chat messages; `chat_prompt_ids` turns one into token ids through the
tokenizer's own chat template, so the student, reflector and teacher all share one template.
"""

from __future__ import annotations

REFLECT_WRONG = (
    "{problem}\n\n"
    "{sibling_block}"
    "Here is an incorrect solution:\n{response}\n\n"
    "The correct final answer is: {answer}\n\n"
    "Find where the incorrect solution first goes wrong. Do not answer the question again. "
    "Reply in exactly two tags:\n"
    "<error_quote>the exact text of the incorrect solution where the reasoning first goes wrong</error_quote>\n"
    "<explaination>what the mistake is and how to fix it</explaination>"
)
REFLECT_SIBLING = "Here is a correct solution:\n{sibling}\n\n"
REFLECT_CORRECT = (
    "{problem}\n\n"
    "Here is a solution:\n{response}\n\n"
    "This solution is correct. Explain why in one tag:\n"
    "<explaination>why the solution is correct</explaination>"
)
TEACHER_SOLUTION = "Correct solution:\n{solution}\n\n"
TEACHER_REFLECTION = "Reflection:\n{reflection}\n\n"
TEACHER_INSTRUCTION = "Now solve the original question correctly."


def _with_system(system: str | None, user: str) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}]


def student_messages(task: dict) -> list[dict]:
    """The task as the student (and the evaluated model) sees it."""
    return _with_system(task.get("system"), task["prompt"])


def reflection_messages(task: dict, response: str, *, correct: bool, sibling: str | None) -> list[dict]:
    """The self-reflector's prompt for one rollout: find the first error, or explain a correct answer."""
    if correct:
        user = REFLECT_CORRECT.format(problem=task["prompt"], response=response)
    else:
        sibling_block = REFLECT_SIBLING.format(sibling=sibling) if sibling else ""
        user = REFLECT_WRONG.format(
            problem=task["prompt"], sibling_block=sibling_block, response=response, answer=task["answer"]
        )
    return [{"role": "user", "content": user}]


def teacher_messages(task: dict, *, solution: str | None, reflection: str | None) -> list[dict]:
    """The self-teacher's richer prompt: the task's system message, then one user turn.

    The error quote is never shown (ref); either part may be absent.
    """
    user = task["prompt"] + "\n\n"
    if solution:
        user += TEACHER_SOLUTION.format(solution=solution)
    if reflection:
        user += TEACHER_REFLECTION.format(reflection=reflection)
    user += TEACHER_INSTRUCTION
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
