"""Training options on the CPU (rosd/training/student.py): gradient checkpointing, LoRA, and several processes.

What runs here: gradient checkpointing and LoRA on a small world model, and the several-process path
(rosd/training/sharding.py: FSDP2) with two CPU processes under torchrun over gloo, for sdpo (EMA teacher)
and LoRA. On GPUs the same code runs under ``accelerate launch`` over NCCL; bfloat16 mixed precision
and CUDA are not exercised here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_model import hand_made_rollouts, small_model_dir

from rosd.io.files import read_jsonl, write_jsonl
from rosd.method.presets import PRESETS, unsupported
from rosd.models.loading import load_model, load_tokenizer
from rosd.stages.distill import run_distill
from rosd.stages.teacher import run_teacher_score, teacher_targets
from rosd.training.checkpoints import (
    ADAPTER,
    EMA_TEACHER,
    SHARDED_TRAINER_STATE,
    TRAINER_STATE,
)
from rosd.training.steps import train_step
from rosd.training.student import SingleProcess, load_student

TRAIN = {
    "lr": 1e-3, "warmup_steps": 2, "weight_decay": 0.01, "grad_clip": 1.0, "micro_batch": 2, "reduction": "reference",
    "is_clip": 2.0, "temperature": 1.0, "steps_per_round": 1, "token_chunk": 7,
    "launcher": "none", "num_processes": 1, "gradient_checkpointing": False, "lora": None,
}
METHOD = {"objective": "distill", "teacher": "frozen", "teacher_context": "reflection_else_solution", "mask": "first_error",
          "loss": {"support": "topk_tail", "topk": 5, "alpha": 0.5}}
LORA = {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}


def settings(round_index=1, method=METHOD, **train):
    return {"device": "cpu", "dtype": "float32", "seed": 0, "round": round_index, "train": {**TRAIN, **train},
            "method": method, "method_name": "rosd", "target": "math"}


@pytest.fixture(scope="module")
def theta0(tmp_path_factory) -> str:
    return str(small_model_dir(tmp_path_factory))


@pytest.fixture(scope="module")
def files(theta0, tmp_path_factory) -> tuple[Path, Path]:
    """Five hand-made rollouts (3 micro-batches of 2: uneven over two processes) and their teacher scores."""
    rows = hand_made_rollouts(theta0)
    folder = tmp_path_factory.mktemp("training")
    write_jsonl(folder / "reflections.jsonl", rows)
    run_teacher_score(teacher=theta0, student=theta0, reflections=str(folder / "reflections.jsonl"),
                      out=str(folder / "teacher.pt"), settings=settings())
    return folder / "reflections.jsonl", folder / "teacher.pt"


def one_step(model, files, **train):
    rows = read_jsonl(files[0])
    targets = torch.load(files[1], weights_only=True)["targets"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=TRAIN["lr"], weight_decay=TRAIN["weight_decay"])
    full = {**settings(**train), "pad_id": 0}
    return train_step(model, optimizer, rows, targets, settings=full, global_step=0)


def rounds(theta0, files, out: Path, n: int, command=None, method=METHOD, **train) -> Path:
    """``n`` rounds of ``method`` through checkpoint files, in this process or as ``command`` + the
    CLI arguments."""
    model = theta0
    for r in range(1, n + 1):
        kwargs = dict(model=model, reflections=str(files[0]), teacher_scores=str(files[1]), out_model=str(out / f"round{r}"),
                      out_metrics=str(out / f"metrics{r}.json"), settings=settings(r, method, **train))
        distill(command, **kwargs)
        model = str(out / f"round{r}")
    return Path(model)


def distill(command=None, **kwargs) -> None:
    """The distill stage in this process, or as ``command`` + its CLI arguments."""
    if command is None:
        return run_distill(**kwargs)
    args = [f"--{k.replace('_', '-')}={json.dumps(v) if k == 'settings' else v}" for k, v in kwargs.items()]
    done = subprocess.run([*command, "distill", *args], capture_output=True, text=True, env=environment())
    assert done.returncode == 0, done.stderr[-4000:]


def environment() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    return env


def test_teacher_scores_micro_batched_by_length_come_back_in_row_order(theta0, files):
    rows = read_jsonl(files[0])
    assert sorted(len(r["response_ids"]) for r in rows) != [len(r["response_ids"]) for r in rows]  # order matters here
    model = load_model(theta0).eval()
    kwargs = dict(support="topk_tail", topk=5, temperature=1.0, pad_id=0, token_chunk=7)
    together, together_sums = teacher_targets(model, model, rows, micro_batch=2, **kwargs)
    for row, target, sums in zip(rows, together, together_sums):
        (alone,), (alone_sums,) = teacher_targets(model, model, [row], micro_batch=1, **kwargs)
        assert torch.equal(target["support"], alone["support"])
        for name, values in sums.items():  # the mechanism sums follow their row too
            assert values == pytest.approx(alone_sums[name], rel=1e-4, abs=1e-5), name  # padding moves the tail a little
        # compared as probabilities: a tail bucket near 0 has a log-prob that padding noise moves visibly
        assert torch.allclose(target["teacher_logp"].exp(), alone["teacher_logp"].exp(), atol=1e-6)


def test_gradient_checkpointing_changes_memory_not_the_step(theta0, files):
    plain = load_student(theta0, TRAIN, "cpu")
    checkpointed = load_student(theta0, {**TRAIN, "gradient_checkpointing": True}, "cpu")
    assert checkpointed.is_gradient_checkpointing and not plain.is_gradient_checkpointing
    a, b = one_step(plain, files), one_step(checkpointed, files)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="LoRA needs peft: pip install 'rosd[train]'")
def test_lora_rounds_resume_the_adapter_and_write_merged_weights(theta0, files, tmp_path):
    last = rounds(theta0, files, tmp_path, 2, lora=LORA)
    assert (last / ADAPTER / "adapter_config.json").exists()
    state = torch.load(last / TRAINER_STATE, weights_only=True)
    assert state["global_step"] == 2
    base, merged = load_model(theta0), load_model(str(last))
    n_layers = base.config.num_hidden_layers
    # AdamW state only for the adapter: A and B of q_proj and v_proj in every layer
    assert len(state["optimizer"]["state"]) == 2 * 2 * n_layers
    for (name, before), after in zip(base.named_parameters(), merged.parameters()):
        if name.endswith(("q_proj.weight", "v_proj.weight")):
            assert not torch.equal(before, after), name
            assert torch.linalg.matrix_rank(after - before, atol=1e-6) <= LORA["r"], name
        else:
            assert torch.equal(before, after), name  # everything else is frozen

    # the same two steps in one process, from the same adapter initialization
    torch.manual_seed(0 * 100_003 + 1)
    student = load_student(theta0, {**TRAIN, "lora": LORA}, "cpu")
    optimizer = torch.optim.AdamW(student.parameters(), lr=TRAIN["lr"], weight_decay=TRAIN["weight_decay"])
    rows, targets = read_jsonl(files[0]), torch.load(files[1], weights_only=True)["targets"]
    pad = load_tokenizer(theta0).pad_token_id
    for step in range(2):
        train_step(student, optimizer, rows, targets, settings={**settings(lora=LORA), "pad_id": pad}, global_step=step)
    fused = student.merge_and_unload()
    for (name, a), b in zip(fused.named_parameters(), merged.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_ema_teacher_moves_rate_of_the_way_to_the_student():
    """SDPO's teacher after a step: (1 − rate) · teacher + rate · student (ref teacher_update_rate)."""
    teacher, student = torch.nn.Linear(2, 1, bias=False), torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([[1.0, -2.0]]))
        student.weight.copy_(torch.tensor([[3.0, 2.0]]))
    SingleProcess(student, device="cpu", dtype="float32", ema=teacher).update_ema(0.05)
    assert torch.allclose(teacher.weight, torch.tensor([[1.1, -1.8]]))  # 0.95 · 1 + 0.05 · 3, 0.95 · −2 + 0.05 · 2
    assert torch.equal(student.weight, torch.tensor([[3.0, 2.0]]))


def test_unsupported_combinations_are_one_line():
    assert unsupported(METHOD, TRAIN) is None
    assert unsupported({**METHOD, "teacher": "ema"}, {**TRAIN, "launcher": "accelerate"}) is None
    assert "EMA" in unsupported({**METHOD, "teacher": "ema"}, {**TRAIN, "lora": LORA})


SDPO = {**METHOD, **PRESETS["sdpo"]}  # the preset, with this file's loss
TORCHRUN = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone", "--nproc-per-node=2", "-m", "rosd.cli"]


def assert_trained_alike(single: Path, split: Path, lr: float = TRAIN["lr"]) -> None:
    """The same weights after the same steps, one process or two. Adam divides by sqrt(v): an entry
    whose gradient is ~0 moves by up to lr whatever the last bits of its gradient, which another
    summation order changes. So: almost every entry within 1e-5, none off by more than one step's
    lr (a dropped or doubled micro-batch moves most entries)."""
    for (name, a), b in zip(load_model(str(single)).named_parameters(), load_model(str(split)).parameters(), strict=True):
        difference = (a - b).abs()
        assert (difference > 1e-5).float().mean() < 1e-3 and difference.max() < lr, name


def assert_sharded_trainer_state(checkpoint: Path) -> None:
    """AdamW state written by torch.distributed.checkpoint, one file per process, and no gathered copy."""
    assert not (checkpoint / TRAINER_STATE).exists()
    assert sorted(p.name for p in (checkpoint / SHARDED_TRAINER_STATE).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]


def test_each_process_takes_every_nth_micro_batch_and_as_many_passes_as_the_others():
    """Three micro-batches over two processes: process 1 repeats micro-batch 0 with weight 0, so both
    make two passes; a step without loss (all groups filtered) has no pass anywhere."""
    from types import SimpleNamespace

    from rosd.training.sharding import Sharded

    process = [SimpleNamespace(rank=rank, world_size=2) for rank in (0, 1)]
    assert Sharded.shard(process[0], ["a", "b", "c"]) == [("a", 1.0), ("c", 1.0)]
    assert Sharded.shard(process[1], ["a", "b", "c"]) == [("b", 1.0), ("a", 0.0)]
    assert Sharded.shard(process[1], []) == Sharded.shard(process[0], []) == []


def test_sharded_training_started_alone_is_one_clear_error(theta0, files, tmp_path):
    with pytest.raises(SystemExit, match="must be started by `accelerate launch` or torchrun"):
        rounds(theta0, files, tmp_path, 1, launcher="accelerate", num_processes=2)


@pytest.mark.pipeline
def test_two_sharded_processes_train_sdpo_like_one(theta0, files, tmp_path):
    """FSDP2 over two CPU processes (gloo): round 2 resumes the sharded AdamW state and the EMA teacher."""
    single = rounds(theta0, files, tmp_path / "single", 2, method=SDPO)
    split = rounds(theta0, files, tmp_path / "two", 2, method=SDPO, command=TORCHRUN, launcher="accelerate", num_processes=2)
    assert_sharded_trainer_state(split)
    assert_trained_alike(single, split)
    assert_trained_alike(single / EMA_TEACHER, split / EMA_TEACHER)
    # a run keeps one launcher: neither resumes the other's optimizer state (nor starts a new one)
    with pytest.raises(SystemExit, match="trained with train.launcher=accelerate; a run keeps one launcher"):
        rounds(str(split), files, tmp_path / "switched", 1, method=SDPO)
    with pytest.raises(AssertionError, match="trained with train.launcher=none; a run keeps one launcher"):
        rounds(str(single), files, tmp_path / "switched", 1, method=SDPO, command=TORCHRUN, launcher="accelerate", num_processes=2)
    # the teacher moved off θ0
    teacher, base = load_model(str(split / EMA_TEACHER)), load_model(theta0)
    assert any(not torch.equal(a, b) for a, b in zip(teacher.parameters(), base.parameters()))
    one, two = (json.loads((tmp_path / d / "metrics2.json").read_text()) for d in ("single", "two"))
    assert two["step"] == one["step"] == 2
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5) and two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-5)
    # the weight-sync guard adds its sums over processes and takes the largest gap of either
    for key in ("sampler_gap_mean", "sampler_gap_max", "sampler_ratio_mean"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="LoRA needs peft: pip install 'rosd[train]'")
@pytest.mark.pipeline
def test_two_sharded_processes_train_lora_like_one(theta0, files, tmp_path):
    single = rounds(theta0, files, tmp_path / "single", 2, lora=LORA)
    split = rounds(theta0, files, tmp_path / "two", 2, lora=LORA, command=TORCHRUN, launcher="accelerate", num_processes=2)
    assert_sharded_trainer_state(split)
    assert (split / ADAPTER / "adapter_config.json").exists()
    assert_trained_alike(single, split)
    adapters = [load_file(d / ADAPTER / "adapter_model.safetensors") for d in (single, split)]
    assert adapters[0].keys() == adapters[1].keys()
    for name, value in adapters[0].items():
        assert torch.allclose(value, adapters[1][name], atol=1e-5), name


def _grpo_settings(grpo: dict) -> dict:
    """The grpo preset over this file's TRAIN, at a learning rate that moves the weights in one round."""
    method = {key: value for key, value in grpo.items() if key != "train"}
    return {"device": "cpu", "dtype": "float32", "seed": 0, "round": 1, "method": method, "method_name": "grpo", "target": "math",
            "train": {**TRAIN, **grpo["train"], "lr": 1e-3, "warmup_steps": 0}}


def _grpo_round(theta0, files, out: Path, command=None, **train) -> Path:
    scores = out / "teacher.pt"
    out.mkdir(parents=True)
    torch.save({"targets": []}, scores)
    settings = _grpo_settings(PRESETS["grpo"])
    distill(command, model=theta0, reflections=str(files[0]), teacher_scores=str(scores), out_model=str(out / "ckpt"),
            out_metrics=str(out / "metrics.json"), settings={**settings, "train": {**settings["train"], **train}})
    return out


def test_grpo_round_takes_its_mini_batch_updates(theta0, files, tmp_path):
    """The grpo preset through the distill stage (old policy recorded, dual clip, IS weight): 5
    rollouts in 3 mini-batch updates (4 requested), and the weights moved."""
    out = _grpo_round(theta0, files, tmp_path / "one")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["optimizer_steps"] == 3 and metrics["step"] == 1  # 3 updates of one training step
    assert metrics["nonfinite_grad_steps"] == 0 and "train_prompts_dropped" not in metrics
    moved = [not torch.equal(a, b) for a, b in zip(load_model(theta0).parameters(), load_model(str(out / "ckpt")).parameters())]
    assert any(moved)


@pytest.mark.pipeline
def test_two_sharded_processes_train_grpo_like_one(theta0, files, tmp_path):
    """The same round on two sharded processes: the old policy's log-probs come from sharded forwards."""
    out = _grpo_round(theta0, files, tmp_path / "one")
    metrics = json.loads((out / "metrics.json").read_text())
    split = _grpo_round(theta0, files, tmp_path / "two", command=TORCHRUN, launcher="accelerate", num_processes=2)
    assert_trained_alike(out / "ckpt", split / "ckpt", lr=1e-3)
    two = json.loads((split / "metrics.json").read_text())
    assert two["loss"] == pytest.approx(metrics["loss"], rel=1e-5, abs=1e-7)


def test_grpo_updates_of_a_step_share_its_warm_up_lr(theta0, files, tmp_path, monkeypatch):
    """ref fsdp_workers.update_actor: the lr scheduler steps once per training step. Two steps of 8
    rollouts, 4 mini-batch updates each, warm-up 10 at lr 1e-3: step 1's updates all at 0, step 2's
    all at 1e-3 / 10; the checkpoint's global step counts 2 steps, not 8 updates."""
    import rosd.stages.distill as distill_stage

    base = read_jsonl(files[0])
    rows = []
    for step in range(2):
        for group, members in enumerate((base, base[:3])):
            rows += [{**row, "step": step, "group": 2 * step + group} for row in members]
    write_jsonl(tmp_path / "reflections.jsonl", rows)
    torch.save({"targets": []}, tmp_path / "teacher.pt")
    seen = []

    def recording(*args, global_step, **kwargs):
        result = train_step(*args, global_step=global_step, **kwargs)
        seen.append((global_step, result["lr"]))
        return result

    monkeypatch.setattr(distill_stage, "train_step", recording)
    grpo = _grpo_settings(PRESETS["grpo"])
    run_distill(model=theta0, reflections=str(tmp_path / "reflections.jsonl"), teacher_scores=str(tmp_path / "teacher.pt"),
                out_model=str(tmp_path / "ckpt"), out_metrics=str(tmp_path / "metrics.json"),
                settings={**grpo, "train": {**grpo["train"], "warmup_steps": 10, "steps_per_round": 2}})
    assert seen == [(0, 0.0)] * 4 + [(1, 1e-3 / 10)] * 4
    assert torch.load(tmp_path / "ckpt" / TRAINER_STATE, weights_only=True)["global_step"] == 2
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["optimizer_steps"] == 8


def test_a_round_counts_its_non_finite_gradient_steps(theta0, files, tmp_path):
    """A NaN teacher target makes the loss and gradient norm NaN: the update is skipped (the
    checkpoint holds θ0's weights and no AdamW state) and counted in the round's metrics."""
    targets = torch.load(files[1], weights_only=True)["targets"]
    targets[0]["teacher_logp"] = torch.full_like(targets[0]["teacher_logp"], float("nan"))
    torch.save({"targets": targets}, tmp_path / "nan.pt")
    for name, scores, count in (("nan", tmp_path / "nan.pt", 1), ("finite", files[1], 0)):
        run_distill(model=theta0, reflections=str(files[0]), teacher_scores=str(scores), out_model=str(tmp_path / name),
                    out_metrics=str(tmp_path / f"{name}.json"), settings=settings(warmup_steps=0))
        metrics = json.loads((tmp_path / f"{name}.json").read_text())
        assert metrics["nonfinite_grad_steps"] == count and metrics["step"] == 1
        state = torch.load(tmp_path / name / TRAINER_STATE, weights_only=True)["optimizer"]["state"]
        moved = [not torch.equal(a, b) for a, b in zip(load_model(theta0).parameters(), load_model(str(tmp_path / name)).parameters())]
        assert (len(state) == 0 and not any(moved)) if count else (len(state) > 0 and any(moved))


def test_topk_support_is_the_starting_checkpoints_float32_top_k(theta0, files):
    """The student's top-k support is computed in the teacher stage from the round's starting
    checkpoint with float32 log-softmax (the reference: in the training forward, in bf16), and the
    distill stage takes it from the teacher targets as they are."""
    from rosd.method.objective import micro_batch_terms
    from rosd.method.scoring import response_logps

    rows, targets = read_jsonl(files[0]), torch.load(files[1], weights_only=True)["targets"]
    student = load_model(theta0).eval()
    for row, target in zip(rows, targets):
        logp, _ = response_logps(student, [row["prompt_ids"]], [row["response_ids"]], temperature=1.0, pad_id=0)
        top = logp[0].topk(METHOD["loss"]["topk"], dim=-1).values
        assert torch.allclose(logp[0].gather(-1, target["support"].long()), top, atol=1e-5)  # ties may swap ids, not values
    bf16 = load_model(theta0, dtype="bfloat16").eval()
    logp, _ = response_logps(bf16, [rows[0]["prompt_ids"]], [rows[0]["response_ids"]], temperature=1.0, pad_id=0)
    assert logp.dtype == torch.float32  # bf16 weights, float32 log-softmax
    full = {**settings(), "pad_id": 0}
    with torch.no_grad():
        given, *_ = micro_batch_terms(student, rows[:1], targets[:1], settings=full)
        other = [{**targets[0], "support": targets[0]["support"].flip(-1)}]  # the same ids, another order
        moved, *_ = micro_batch_terms(student, rows[:1], other, settings=full)
    assert not torch.allclose(given, moved)
