"""A small model directory for tests: the shipped θ0 when it is there, else a few-step warm start of
a one-layer world model (same tokenizer and chat template code, a few seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path

THETA0 = Path(__file__).resolve().parent.parent / "rosd" / "world" / "theta0"


def shipped_theta0_exists() -> bool:
    return (THETA0 / "config.json").exists()


def small_model_dir(tmp_path_factory) -> Path:
    if shipped_theta0_exists():
        return THETA0
    from rosd.world.warm_start import run_warm_start

    out = tmp_path_factory.mktemp("theta0") / "model"
    run_warm_start(str(out), seed=0, steps=2, batch_size=4, layers=1, hidden=32, vocab_size=400, log_every=1, warmup=1)
    return out


def hand_made_rollouts(model_dir) -> list[dict]:
    """Five rollouts of one world-style task, as the reflect stage writes them: real token ids, one
    correct answer, masks that start mid-response, and sampler log-probs a little off the trainer's
    so the importance weights matter."""
    import torch

    from rosd.method.prompts import chat_prompt_ids, student_messages, teacher_messages
    from rosd.models.loading import load_tokenizer

    tok = load_tokenizer(str(model_dir))
    task = {"system": "Put the final answer in \\boxed{}.", "prompt": "Compute 3 + 5 - 2.", "answer": "6", "kind": "math"}
    responses = ["3 + 5 = 8\n8 - 2 = 6\n\\boxed{6}", "3 + 5 = 9\n9 - 2 = 7\n\\boxed{7}", "3 + 5 = 8\n8 - 2 = 5\n\\boxed{5}",
                 "3 + 5 = 8\n\\boxed{8}", "3 - 5 = 8\n\\boxed{6}"]
    teacher_prompt = chat_prompt_ids(tok, teacher_messages(task, solution=responses[0], reflection="Recheck each sum."))
    rows = []
    for i, text in enumerate(responses):
        ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        torch.manual_seed(i)
        rows.append({
            "step": 0, "group": 0, "sample": i, "task": task, "in_loss": True, "distilled": True, "reward": float(i == 0),
            "prompt_ids": chat_prompt_ids(tok, student_messages(task)), "teacher_prompt_ids": teacher_prompt,
            "response_ids": ids, "response": text, "loss_start": [0, 2, 6, 0, 1][i],
            "sampler_logps": (-2.0 + 0.5 * torch.rand(len(ids))).tolist(),
        })
    return rows
