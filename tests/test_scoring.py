"""Student and teacher score the same sampled ids under one chat template, row by row."""

from pathlib import Path

import pytest
import torch

from rosd.method.prompts import chat_prompt_ids, student_messages, teacher_messages
from rosd.method.scoring import response_logps

THETA0 = str(Path(__file__).resolve().parent.parent / "rosd" / "world" / "theta0")
TASK = {"system": "Put the final answer in \\boxed{}.", "prompt": "Compute 3 + 5 - 2.", "answer": "6"}


@pytest.fixture(scope="module")
def model_and_tokenizer():
    from rosd.models.loading import load_model, load_tokenizer

    return load_model(THETA0).eval(), load_tokenizer(THETA0)


def test_student_and_teacher_prompts_share_the_template(model_and_tokenizer):
    _, tok = model_and_tokenizer
    student = chat_prompt_ids(tok, student_messages(TASK))
    teacher = chat_prompt_ids(tok, teacher_messages(TASK, solution="3 + 5 = 8\n8 - 2 = 6", reflection="fine"))
    header = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert student[-len(header):] == header and teacher[-len(header):] == header
    # The same system turn opens both prompts.
    system = chat_prompt_ids(tok, [{"role": "system", "content": TASK["system"]}])[: -len(header)]
    assert student[: len(system)] == system == teacher[: len(system)]


@torch.no_grad()
def test_row_for_response_token_t_is_the_one_that_predicts_it(model_and_tokenizer):
    model, tok = model_and_tokenizer
    student = chat_prompt_ids(tok, student_messages(TASK))
    teacher = chat_prompt_ids(tok, teacher_messages(TASK, solution="3 + 5 = 8\n8 - 2 = 6", reflection=None))
    response = tok("3 + 5 = 8\n8 - 2 = 6\nThe answer is \\boxed{6}.", add_special_tokens=False)["input_ids"]
    # Batched with prompts of different lengths (right padding), as the stages score them.
    logp, mask = response_logps(model, [student, teacher], [response, response[:5]], temperature=1.0, pad_id=tok.pad_token_id)
    assert mask[0].sum() == len(response) and mask[1].sum() == 5
    for b, prompt in ((0, student), (1, teacher)):
        for t in range(int(mask[b].sum())):
            # Unbatched: the last row of prompt + response[:t] predicts response token t.
            alone = model(input_ids=torch.tensor([prompt + response[:t]])).logits[0, -1]
            assert torch.allclose(logp[b, t], torch.log_softmax(alone, -1), atol=1e-4)
