"""Throughput of the HF backend on one GPU in bfloat16, for a Qwen3-0.6B-shaped model with random
weights (nothing is downloaded): rollouts (batched generate through rosd's HF engine), teacher
scoring (rosd's teacher stage: student top-k + teacher log-probs, in micro-batches) and training
(rosd's train step: float32 weights, bfloat16 autocast, AdamW), with the training MFU, and the push of
the trained weights into the live rollout engine (a resident block's path, rosd/stages/resident.py).

    python benchmarks/gpu_throughput.py            # ~3 minutes on one H100; JSON to $OUT if set
    python benchmarks/gpu_throughput.py --smoke    # tiny shapes, any device (the CPU included)

Tokens/s count the tokens each phase processes: generated tokens for rollouts, prompt + response
tokens through both models for scoring and through the student for training. MFU is model FLOPs /
time / the GPU's dense bfloat16 peak, with 6 FLOPs per parameter per token for the decoder (its
input embedding excluded: a lookup) and for the vocabulary projection only on response tokens (the
only rows the loss projects); activation recomputation is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen3Config

from rosd.engines.hf import HFEngine
from rosd.stages.teacher import teacher_targets
from rosd.training.steps import train_step

QWEN3_06B = dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                 intermediate_size=3072, vocab_size=151936, head_dim=128, tie_word_embeddings=True)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=1000, head_dim=16, tie_word_embeddings=True)
# Dense bfloat16 peak FLOP/s by a part of the device name, first match wins (NVIDIA data sheets).
PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12}

# Workload sizes: (prompts, prompt tokens, new tokens) for rollouts; (rows, prompt tokens, response
# tokens, micro-batch) for scoring and training.
FULL = {"rollouts": (64, 256, 256), "scoring": (64, 512, 512, 8), "training": (32, 256, 512, 2), "train_steps": 3}
SMOKE = {"rollouts": (4, 16, 16), "scoring": (4, 16, 16, 2), "training": (4, 16, 16, 2), "train_steps": 1}

METHOD = {"objective": "distill", "loss": {"support": "topk_tail", "topk": 100, "alpha": 0.5}}
TRAIN = {"lr": 1e-5, "warmup_steps": 10, "weight_decay": 0.01, "grad_clip": 1.0, "reduction": "reference",
         "is_clip": 2.0, "temperature": 1.0, "token_chunk": 1024}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def write_random_model(folder: Path, shape: dict, device: str) -> Path:
    """A random-weight Qwen3 model and a word-level tokenizer over its ids, as a model directory, so
    that the HF engine loads it exactly as the pipeline loads a checkpoint."""
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(Qwen3Config(**shape), dtype=torch.bfloat16)
    # Token 1 ends a turn; with random weights it is rarely sampled, so responses run to full length.
    vocab = {"<pad>": 0, "<eos>": 1, **{f"t{i}": i for i in range(2, shape["vocab_size"])}}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<pad>")), pad_token="<pad>", eos_token="<eos>")
    model.generation_config.eos_token_id = model.config.eos_token_id = 1
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def random_ids(n: int, length: int, vocab: int) -> list[list[int]]:
    return torch.randint(2, vocab, (n, length)).tolist()


def measure_rollouts(model_dir: Path, device: str, sizes: tuple, vocab: int) -> tuple[dict, HFEngine]:
    prompts_n, prompt_len, new = sizes
    engine = HFEngine(str(model_dir), device=device, dtype="bfloat16", batch_size=prompts_n)
    prompts = random_ids(prompts_n, prompt_len, vocab)
    engine.generate(prompts[:2], n=1, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=0)  # warm-up
    sync(device)
    started = time.perf_counter()
    samples = engine.generate(prompts, n=1, temperature=1.0, top_p=1.0, max_new_tokens=new, seed=0)
    sync(device)
    seconds = time.perf_counter() - started
    tokens = sum(len(s.ids) for group in samples for s in group)
    return {"sequences": prompts_n, "prompt_tokens": prompt_len, "generated_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}, engine


def rollout_rows(n: int, prompt_len: int, response_len: int, vocab: int) -> list[dict]:
    return [
        {"prompt_ids": p, "teacher_prompt_ids": t, "response_ids": r, "loss_start": 0, "distilled": True, "sampler_logps": [-1.0] * response_len}
        for p, t, r in zip(random_ids(n, prompt_len, vocab), random_ids(n, prompt_len, vocab), random_ids(n, response_len, vocab))
    ]


def measure_scoring(model, device: str, sizes: tuple, vocab: int) -> tuple[dict, list[dict]]:
    n, prompt_len, response_len, micro_batch = sizes
    rows = rollout_rows(n, prompt_len, response_len, vocab)
    kwargs = dict(support="topk_tail", topk=100, temperature=1.0, pad_id=0, micro_batch=micro_batch, token_chunk=1024)
    teacher_targets(model, model, rows[:micro_batch], **kwargs)  # warm-up
    sync(device)
    started = time.perf_counter()
    targets, _ = teacher_targets(model, model, rows, **kwargs)
    sync(device)
    seconds = time.perf_counter() - started
    tokens = 2 * n * (prompt_len + response_len)  # teacher and student each read prompt + response
    result = {"rows": n, "prompt_tokens": prompt_len, "response_tokens": response_len, "micro_batch": micro_batch,
              "seconds": seconds, "tokens_per_s": tokens / seconds, "response_tokens_per_s": n * response_len / seconds}
    return result, targets


def measure_training(model_dir: Path, device: str, sizes: tuple, steps: int, rows: list[dict], targets: list[dict], shape: dict) -> tuple[dict, torch.nn.Module]:
    n, prompt_len, response_len, micro_batch = sizes
    student = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).train()  # float32 master weights
    optimizer = torch.optim.AdamW(student.parameters(), lr=TRAIN["lr"], weight_decay=TRAIN["weight_decay"])
    settings = {"train": {**TRAIN, "micro_batch": micro_batch}, "method": METHOD, "pad_id": 0, "device": device, "dtype": "bfloat16"}
    rows, targets = rows[:n], targets[:n]
    train_step(student, optimizer, rows[:micro_batch], targets[:micro_batch], settings=settings, global_step=0)  # warm-up
    sync(device)
    started = time.perf_counter()
    for step in range(steps):
        train_step(student, optimizer, rows, targets, settings=settings, global_step=step + 1)
    sync(device)
    seconds = time.perf_counter() - started
    tokens = steps * n * (prompt_len + response_len)
    embedding = shape["vocab_size"] * shape["hidden_size"]
    decoder = sum(p.numel() for p in student.parameters()) - embedding  # tied: the projection is the embedding matrix
    flops = 6 * decoder * tokens + 6 * embedding * steps * n * response_len
    result = {"rows": n, "prompt_tokens": prompt_len, "response_tokens": response_len, "micro_batch": micro_batch,
              "steps": steps, "seconds": seconds, "tokens_per_s": tokens / seconds, "model_flops": flops,
              "decoder_parameters": decoder, "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else None}
    peak = next((value for name, value in PEAK_BF16.items() if device.startswith("cuda") and name in torch.cuda.get_device_name()), None)
    result["mfu"] = flops / seconds / peak if peak else None
    return result, student


def measure_push(engine: HFEngine, student: torch.nn.Module, device: str) -> dict:
    """A resident block's push: the trained float32 weights into the live bfloat16 engine, in memory
    (``load_weights``); afterwards every engine tensor must equal the trained one cast to bfloat16."""
    weights = student.state_dict()
    sync(device)
    started = time.perf_counter()
    engine.load_weights(weights)
    sync(device)
    seconds = time.perf_counter() - started
    pushed = engine.model.state_dict()
    exact = all(torch.equal(pushed[name], tensor.to(pushed[name].dtype)) for name, tensor in weights.items())
    gb = sum(t.numel() * t.element_size() for t in pushed.values()) / 1e9
    return {"seconds": seconds, "engine_gb": gb, "exact": exact}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and sizes: checks the script, measures nothing")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=os.path.join(os.environ["OUT"], "gpu_throughput.json") if os.environ.get("OUT") else None)
    args = parser.parse_args()
    if not args.smoke and not args.device.startswith("cuda"):
        parser.error("the full benchmark needs a CUDA device; use --smoke elsewhere")
    shape, sizes = (TINY, SMOKE) if args.smoke else (QWEN3_06B, FULL)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_random_model(Path(tmp) / "model", shape, args.device)
        rollouts, engine = measure_rollouts(model_dir, args.device, sizes["rollouts"], shape["vocab_size"])
        scorer = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to(args.device).eval()
        scoring, targets = measure_scoring(scorer, args.device, sizes["scoring"], shape["vocab_size"])
        # Training reads its own rows, scored by the same teacher code.
        n, prompt_len, response_len, micro_batch = sizes["training"]
        rows = rollout_rows(n, prompt_len, response_len, shape["vocab_size"])
        targets, _ = teacher_targets(scorer, scorer, rows, support="topk_tail", topk=100, temperature=1.0, pad_id=0,
                                     micro_batch=micro_batch, token_chunk=1024)
        del scorer
        training, student = measure_training(model_dir, args.device, sizes["training"], sizes["train_steps"], rows, targets, shape)
        push = measure_push(engine, student, args.device)
    report = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "model": "Qwen3-0.6B shape, random weights" if not args.smoke else "tiny Qwen3 (smoke)",
        "config": shape, "torch": torch.__version__,
        "rollouts": rollouts, "teacher_scoring": scoring, "training": training, "weight_push": push,
        "seconds": time.perf_counter() - started,
    }
    autocast = " + bfloat16 autocast" if args.device.startswith("cuda") else ""
    print(f"\n{report['model']} on {report['device']}: bfloat16 generation and scoring; training float32 weights{autocast}")
    print(f"{'phase':<16}{'tokens/s':>12}{'seconds':>10}  workload")
    print(f"{'rollouts':<16}{rollouts['tokens_per_s']:>12.0f}{rollouts['seconds']:>10.1f}  {rollouts['sequences']} sequences, {rollouts['prompt_tokens']} prompt + up to {sizes['rollouts'][2]} new tokens")
    print(f"{'teacher scoring':<16}{scoring['tokens_per_s']:>12.0f}{scoring['seconds']:>10.1f}  {scoring['rows']} rows of {scoring['prompt_tokens']} + {scoring['response_tokens']} tokens, teacher + student, micro-batch {scoring['micro_batch']}")
    mfu = f", MFU {training['mfu']:.1%}" if training["mfu"] is not None else ", MFU n/a (unknown peak)"
    print(f"{'training':<16}{training['tokens_per_s']:>12.0f}{training['seconds']:>10.1f}  {training['steps']} steps of {training['rows']} rows of {training['prompt_tokens']} + {training['response_tokens']} tokens, micro-batch {training['micro_batch']}{mfu}")
    print(f"{'weight push':<16}{'':>12}{push['seconds']:>10.3f}  {push['engine_gb']:.2f} GB into the live engine, {'exact' if push['exact'] else 'NOT EQUAL to the trained weights'}")
    print(f"total {report['seconds']:.0f}s")
    if not push["exact"]:
        raise SystemExit("the engine's weights after the push differ from the trained ones")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
