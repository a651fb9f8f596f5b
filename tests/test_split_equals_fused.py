"""Split equals fused (docs/method.md, "Teacher scoring"): the stages' files change nothing about the computation.

(a) With ``steps_per_round: 1``, the loss computed from the teacher-scoring stage's file equals the
    loss computed in one process, with both models live, by a direct implementation of docs/method.md, "Loss".
(b) Three rounds through files (checkpoint with optimizer state and step in between) end with the
    same weights as three optimizer steps in one process on the same rollouts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_model import hand_made_rollouts

from rosd.io.files import read_jsonl, write_jsonl
from rosd.method.objective import micro_batch_terms
from rosd.models.loading import load_model, load_tokenizer
from rosd.stages.distill import run_distill
from rosd.stages.teacher import run_teacher_score
from rosd.training.steps import optimizer_for, train_step

THETA0 = str(Path(__file__).resolve().parent.parent / "rosd" / "world" / "theta0")
TRAIN = {
    "lr": 1e-3, "warmup_steps": 2, "weight_decay": 0.01, "grad_clip": 1.0, "micro_batch": 2, "reduction": "reference",
    "is_clip": 2.0, "temperature": 1.0, "steps_per_round": 1, "token_chunk": 7,
}
METHOD = {"objective": "distill", "teacher": "frozen", "teacher_context": "reflection_else_solution", "mask": "first_error",
          "loss": {"support": "topk_tail", "topk": 5, "alpha": 0.5}}


@pytest.fixture(scope="module")
def reflections(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("split") / "reflections.jsonl"
    write_jsonl(path, hand_made_rollouts(THETA0))
    return path


def settings(round_index=1):
    return {"device": "cpu", "dtype": "float32", "seed": 0, "round": round_index, "train": TRAIN, "method": METHOD,
            "method_name": "rosd", "target": "math"}


def fused_loss(student, teacher, rows) -> torch.Tensor:
    """The loss of docs/method.md, "Loss", written out directly: full forward of both models, student top-k + tail, JSD,
    truncated importance weight, token mean per micro-batch of 2, averaged over micro-batches."""
    from rosd.method.losses import add_tail, generalized_jsd

    values = []
    for start in range(0, len(rows), 2):
        total, count = 0.0, 0
        for r in rows[start : start + 2]:
            n, p, q = len(r["response_ids"]), len(r["prompt_ids"]), len(r["teacher_prompt_ids"])
            s_logits = student(input_ids=torch.tensor([r["prompt_ids"] + r["response_ids"]])).logits[0, p - 1 : p - 1 + n]
            t_logits = teacher(input_ids=torch.tensor([r["teacher_prompt_ids"] + r["response_ids"]])).logits[0, q - 1 : q - 1 + n]
            s_logp, t_logp = torch.log_softmax(s_logits, -1), torch.log_softmax(t_logits, -1)
            top = s_logp.topk(5, dim=-1).indices
            per_token = generalized_jsd(add_tail(s_logp.gather(-1, top)), add_tail(t_logp.gather(-1, top)), 0.5)
            sampled = s_logp.gather(-1, torch.tensor(r["response_ids"])[:, None]).squeeze(-1)
            weight = torch.exp(sampled - torch.tensor(r["sampler_logps"])).clamp(max=2.0)
            mask = (torch.arange(n) >= r["loss_start"]).float()
            total = total + (per_token * weight * mask).sum()
            count += int(mask.sum())
        values.append(total / count)
    return torch.stack(values).mean()


def split_loss(student, rows, targets) -> torch.Tensor:
    values = []
    for start in range(0, len(rows), 2):
        per_token, weights, mask, _ = micro_batch_terms(
            student, rows[start : start + 2], targets[start : start + 2], settings={**settings(), "pad_id": 0}
        )
        values.append((per_token * weights * mask).sum() / mask.sum())
    return torch.stack(values).mean()


def test_loss_through_teacher_files_equals_fused(reflections, tmp_path):
    scores = tmp_path / "teacher.pt"
    run_teacher_score(teacher=THETA0, student=THETA0, reflections=str(reflections), out=str(scores), settings=settings())
    rows = read_jsonl(reflections)
    targets = torch.load(scores, weights_only=True)["targets"]
    student, teacher = load_model(THETA0), load_model(THETA0)
    with torch.no_grad():
        assert split_loss(student, rows, targets).item() == pytest.approx(fused_loss(student, teacher, rows).item(), abs=1e-5)


def test_three_rounds_through_files_equal_three_steps_in_one_process(reflections, tmp_path):
    scores = tmp_path / "teacher.pt"
    run_teacher_score(teacher=THETA0, student=THETA0, reflections=str(reflections), out=str(scores), settings=settings())
    model = THETA0
    for round_index in (1, 2, 3):
        out = tmp_path / f"round{round_index}"
        run_distill(model=model, reflections=str(reflections), teacher_scores=str(scores), out_model=str(out),
                    out_metrics=str(tmp_path / f"metrics{round_index}.json"), settings=settings(round_index))
        model = str(out)
    assert json.loads((tmp_path / "metrics3.json").read_text())["step"] == 3

    rows = read_jsonl(reflections)
    targets = torch.load(scores, weights_only=True)["targets"]
    fused = load_model(THETA0).train()
    optimizer, step = optimizer_for(fused, TRAIN, Path(THETA0))
    for _ in range(3):
        train_step(fused, optimizer, rows, targets, settings={**settings(), "pad_id": load_tokenizer(THETA0).pad_token_id}, global_step=step)
        step += 1
    split = load_model(model)
    for (name, a), (_, b) in zip(fused.named_parameters(), split.named_parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
    # The checkpoints really carried the optimizer: restarting AdamW each round gives other weights.
    restarted = load_model(THETA0).train()
    for global_step in range(3):
        fresh = torch.optim.AdamW(restarted.parameters(), lr=TRAIN["lr"], weight_decay=TRAIN["weight_decay"])
        train_step(restarted, fresh, rows, targets, settings={**settings(), "pad_id": 0}, global_step=global_step)
    assert not all(torch.allclose(a, b, atol=1e-5) for a, b in zip(restarted.parameters(), split.parameters()))
