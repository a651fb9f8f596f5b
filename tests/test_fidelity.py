"""The reference's training computation, pinned against values written out by hand from its code
(docs/fidelity.md names the reference file behind each test): the per-sample mask, the loss
reduction, the zero-gradient step, the warm-up, GRPO's dual clip, the evaluation schedule."""

from pathlib import Path

import pytest
import torch

from rosd.method.groups import mark_groups
from rosd.method.losses import clipped_policy_gradient
from rosd.method.objective import loss_micro_batches, micro_batch_value, warmup_lr
from rosd.method.presets import PRESETS, evaluation_rounds
from rosd.stages.reflect import teacher_prompt
from rosd.training.steps import train_step

THETA0 = Path(__file__).resolve().parent.parent / "rosd" / "world" / "theta0"

# One step of 6 rollouts, micro-batches of 2: r0 r1 (a kept group), r2 r3 (a filtered group),
# r4 (kept, loss from its second token), r5 (kept, but its teacher had no context).
PER_TOKEN = {0: [1.0, 2.0], 1: [3.0], 2: [50.0], 3: [50.0], 4: [4.0, 6.0], 5: [100.0]}
LOSS_START = {0: 0, 1: 0, 2: 0, 3: 0, 4: 1, 5: 0}
DISTILLED = {0: True, 1: True, 2: False, 3: False, 4: True, 5: False}


def _step_loss(reduction: str) -> float:
    rows = [{"i": i, "distilled": DISTILLED[i], "response_ids": PER_TOKEN[i], "loss_start": LOSS_START[i]} for i in range(6)]
    chunks, divisor = loss_micro_batches([(r, None) for r in rows], 2, reduction)
    total_tokens = sum(len(r["response_ids"]) - r["loss_start"] for r in rows if r["distilled"])
    total = 0.0
    for chunk in chunks:
        per_token = torch.tensor([v for r, _ in chunk for v in PER_TOKEN[r["i"]]])
        mask = torch.tensor([float(t >= LOSS_START[r["i"]]) for r, _ in chunk for t in range(len(PER_TOKEN[r["i"]]))])
        total += micro_batch_value(per_token, torch.ones_like(per_token), mask, reduction=reduction, divisor=divisor, total_tokens=total_tokens).item()
    return total


def test_reference_reduction_divides_by_all_the_steps_micro_batches():
    # ref core_algos.py agg_loss token-mean per micro-batch, x 1/gradient_accumulation over the whole
    # batch: (mean(1, 2, 3) + mean(6)) / 3 micro-batches, the filtered pair counting as a zero.
    assert _step_loss("reference") == pytest.approx((2.0 + 6.0) / 3)


def test_kept_micro_batches_and_global_reductions():
    assert _step_loss("kept_micro_batches") == pytest.approx((2.0 + 6.0) / 2)  # rosd's earlier default
    assert _step_loss("global") == pytest.approx((1.0 + 2.0 + 3.0 + 6.0) / 4)


def test_warm_up_starts_at_zero():
    # ref torch_functional.py get_constant_schedule_with_warmup: step k uses k / warmup of the lr.
    assert [warmup_lr(1e-3, k, 10) for k in (0, 5, 10, 11)] == [0.0, 5e-4, 1e-3, 1e-3]
    assert warmup_lr(1e-3, 0, 0) == 1e-3


def test_a_step_without_loss_still_steps_adamw_on_a_zero_gradient():
    from rosd.models.loading import load_model

    model = load_model(str(THETA0)).train()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    rows = [{"distilled": False, "response_ids": [5, 6], "loss_start": 0} for _ in range(4)]
    train = {"lr": 1e-3, "warmup_steps": 2, "micro_batch": 2, "reduction": "reference", "grad_clip": 1.0}
    result = train_step(model, optimizer, rows, None, settings={"train": train, "device": "cpu", "dtype": "float32"}, global_step=2)
    assert result["loss"] == 0.0 and result["grad_norm"] == 0.0
    for p, old in zip(model.parameters(), before):
        assert optimizer.state[p]["step"] == 1  # the step counted: Adam's bias correction advances
        torch.testing.assert_close(p.detach(), old * (1 - 1e-3 * 0.01))  # only the decoupled weight decay moved it


def test_grpo_dual_clip():
    # ref core_algos.py compute_policy_loss_vanilla: max(-A r, -A clip(r, 0.8, 1.28)), and for A < 0
    # at most -3 A.
    logp = torch.log(torch.tensor([2.0, 4.0, 2.0, 0.5]))
    advantages = torch.tensor([-1.0, -1.0, 1.0, 1.0])
    losses = clipped_policy_gradient(logp, torch.zeros(4), advantages, 0.2, 0.28, dual_clip=3.0)
    torch.testing.assert_close(losses, torch.tensor([2.0, 3.0, -1.28, -0.5]))
    without = clipped_policy_gradient(logp, torch.zeros(4), advantages, 0.2, 0.28)
    assert without[1].item() == pytest.approx(4.0)


def test_grpo_preset_is_the_reference_baseline():
    grpo = PRESETS["grpo"]
    assert grpo["train"] == {"lr": 1e-6, "micro_batch": 8, "group_filter": "none", "skip_no_success": False}
    assert grpo["grpo"] == {"clip_low": 0.2, "clip_high": 0.28, "dual_clip": 3.0, "updates_per_batch": 4}


@pytest.fixture(scope="module")
def tokenizer():
    from rosd.models.loading import load_tokenizer

    return load_tokenizer(str(THETA0))


def _group(explanations):
    task = {"prompt": "Compute 3 + 5.", "answer": "8", "kind": "math", "solution": "3 + 5 = 8"}
    rows = [
        {"group": 0, "response": text, "reward": reward, "task": task}
        for text, reward in (("3 + 5 = 8", 1.0), ("3 + 5 = 9", 0.0), ("3 + 5 = 7", 0.0))
    ]
    mark_groups(rows)
    for row, explanation in zip(rows, explanations):
        row["explanation"] = explanation
    return rows


@pytest.mark.parametrize(
    "context, explanations, distilled",
    [
        # rosd: the lone correct rollout is distilled only when its reflection parsed
        ("reflection_else_solution", [None, None, "fix it"], [False, True, True]),
        ("reflection_else_solution", ["it adds up", None, None], [True, True, True]),
        # sdpo: a lone correct rollout never has a sibling
        ("solution", ["it adds up", None, None], [False, True, True]),
        # no fallback: an unparsed reflection leaves the teacher without context
        ("reflection", [None, None, "fix it"], [False, False, True]),
    ],
)
def test_per_sample_mask_needs_a_teacher_context(tokenizer, context, explanations, distilled):
    """ref ray_trainer.py self_distillation_mask: a usable teacher signal is required."""
    settings = {"method": {"teacher_context": context}, "train": {"teacher_prompt_max_tokens": 10240}, "enable_thinking": False}
    rows = _group(explanations)
    for row in rows:
        teacher_prompt(tokenizer, row, settings)
    assert [r["distilled"] for r in rows] == distilled


def test_teacher_prompts_are_cut_from_the_right(tokenizer):
    rows = _group(["fix it", None, None])
    settings = {"method": {"teacher_context": "reflection_else_solution"}, "enable_thinking": False}
    teacher_prompt(tokenizer, rows[1], {**settings, "train": {"teacher_prompt_max_tokens": None}})
    full = rows[1]["teacher_prompt_ids"]
    teacher_prompt(tokenizer, rows[1], {**settings, "train": {"teacher_prompt_max_tokens": 7}})
    assert rows[1]["teacher_prompt_ids"] == full[:7] and rows[1]["teacher_prompt_cut"]


def test_evaluation_schedule_every_n_steps_and_the_last():
    assert evaluation_rounds(25, 1, 10) == [10, 20, 25]
    assert evaluation_rounds(5, 4, 10) == [5]  # steps 4, 8, 12, 16, 20: only round 5 ends on a multiple of 10
    assert evaluation_rounds(25, 1, None) == [25]
    assert evaluation_rounds(3, 1, 1) == [1, 2, 3]


def test_grpo_warm_up_advances_once_per_training_step():
    # ref fsdp_workers.update_actor: the lr scheduler steps once per training step, after all of its
    # mini-batch updates; warm-up 10 steps of lr 1e-6: step 1 at 0, step 2 at 1e-7, step 11 on at 1e-6.
    assert [warmup_lr(1e-6, step, 10) for step in (0, 1, 10)] == [0.0, 1e-6 / 10, 1e-6]


def test_micro_batches_are_formed_in_row_order():
    """rosd pairs rows in file (group, then sample) order; the reference's balance_batch reorders
    first (docs/fidelity.md, known departures): this pins rosd's order."""
    rows = [{"i": i, "distilled": True, "response_ids": [1], "loss_start": 0} for i in range(7)]
    chunks, divisor = loss_micro_batches([(r, None) for r in rows], 2, "reference")
    assert [[r["i"] for r, _ in chunk] for chunk in chunks] == [[0, 1], [2, 3], [4, 5], [6]] and divisor == 4


def test_a_non_finite_gradient_norm_skips_the_update():
    """ref dp_actor.py: if not torch.isfinite(grad_norm): zero_grad and no optimizer step."""
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()  # AdamW state to keep
    weights = [p.detach().clone() for p in model.parameters()]
    states = [{k: v.clone() for k, v in optimizer.state[p].items()} for p in model.parameters()]

    class Runtime:
        world_size = 1

        def __init__(self, loss):
            self.loss = loss

        def shard(self, chunks):
            return [(chunk, 1.0) for chunk in chunks]

        def forward(self, fn, rows, targets, settings):
            per_token = model(torch.ones(1, 3)).reshape(1) * self.loss
            return per_token, torch.ones(1), torch.ones(1), (0.0, 0.0, 1.0, 1)  # no sampler-trainer gap

        def parameters(self):
            return model.parameters()

        def clip_grad_norm(self, max_norm):
            return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))

        def total(self, value):
            return value

        def largest(self, value):
            return value

    rows = [{"distilled": True, "response_ids": [1], "loss_start": 0}]
    train = {"lr": 1e-2, "warmup_steps": 0, "micro_batch": 2, "reduction": "reference", "grad_clip": 1.0}
    settings = {"train": train}
    result = train_step(model, optimizer, rows, None, settings=settings, global_step=5, runtime=Runtime(float("nan")))
    assert result["skipped"] and not torch.isfinite(torch.tensor(result["grad_norm"]))
    for p, old, state in zip(model.parameters(), weights, states):
        assert torch.equal(p.detach(), old) and p.grad is None
        assert optimizer.state[p].keys() == state.keys() == {"step", "exp_avg", "exp_avg_sq"}
        assert all(torch.equal(optimizer.state[p][key], value) for key, value in state.items())  # moments and step count
    result = train_step(model, optimizer, rows, None, settings=settings, global_step=5, runtime=Runtime(1.0))
    assert not result["skipped"]
    assert all(not torch.equal(p.detach(), old) for p, old in zip(model.parameters(), weights))


def _opsd() -> dict:
    from rosd.method.presets import resolve

    config = {"loss": {"support": "topk_tail", "topk": 100, "alpha": 0.5},
              "train": {"temperature": 1.0, "top_p": 1.0, "top_k": None, "group_filter": "zero_variance", "skip_no_success": True}}
    return resolve(config, "opsd")


def test_opsd_preset_clips_entries_and_samples_as_opsd():
    # OPSD opsd_trainer.py: forward KL (alpha 0) over the vocabulary, each entry clipped at 0.05;
    # its generation: T 1.1, top_p 0.95, top_k 20.
    opsd = _opsd()
    assert opsd["loss"] == {"support": "full", "topk": 100, "alpha": 0.0, "entry_clip": 0.05}
    assert {key: opsd["train"][key] for key in ("temperature", "top_p", "top_k")} == {"temperature": 1.1, "top_p": 0.95, "top_k": 20}


def test_opsd_distills_every_rollout_whatever_its_reward(tokenizer):
    """OPSD: no group filter and no reward gating; every rollout's teacher reads the reference solution."""
    opsd = _opsd()
    task = {"prompt": "Compute 3 + 5.", "answer": "8", "kind": "math", "solution": "3 + 5 = 8"}
    rewards = {0: (1.0, 1.0), 1: (0.0, 0.0), 2: (1.0, 0.0)}  # all right, all wrong, mixed
    rows = [{"group": g, "response": "3 + 5 = 8", "reward": r, "task": task} for g, pair in rewards.items() for r in pair]
    mark_groups(rows, group_filter=opsd["train"]["group_filter"], skip_no_success=opsd["train"]["skip_no_success"])
    settings = {"method": {"teacher_context": opsd["teacher_context"]}, "train": {"teacher_prompt_max_tokens": None}, "enable_thinking": False}
    for row in rows:
        teacher_prompt(tokenizer, row, settings)
    assert all(r["in_loss"] and r["distilled"] for r in rows)


def test_opsd_teacher_has_no_closing_line_of_its_own():
    """OPSD appends "Please reason step by step, and put your final answer within \\boxed{}."; rosd does
    not (every task prompt ends with its own answer-format instruction): the teacher's user turn ends
    with OPSD's transition prompt."""
    from rosd.method.prompts import teacher_messages

    task = {"prompt": "Which is a noble gas?\nA. N\nB. Ne\nAnswer with <answer>X</answer>.", "answer": "B", "kind": "mcq"}
    user = teacher_messages(task, solution="Neon is.", reflection=None, wording="opsd")[-1]["content"]
    assert user.endswith("if something doesn't work out:\n") and "boxed" not in user
