"""Peak memory and time of HF generation at a large vocabulary, by number of new tokens: the stored-logits path
(``output_logits=True``: every step's [batch, vocabulary] logits kept until the batch ends, then the
sampled tokens' log-probs picked out) vs rosd's HF engine (the sampled token's log-prob recorded
step by step by a logits processor, one step's [batch, vocabulary] held at a time).

    python benchmarks/generation_memory.py [--new-tokens 64 128 256] [--batch 8] [--vocab 151936] [--out FILE]
    python benchmarks/generation_memory.py --smoke     # tiny shapes, a few seconds: checks the script

The model is a Qwen3-shaped one with random weights and a tiny decoder (2 layers, hidden 64), so the
vocabulary dominates, as it does per token at Qwen3 scale. Random weights give a near-uniform next
token, so a row ends (samples the end-of-turn token) with probability ~1/vocabulary a step and a
batch, which ends when all its rows have, runs to the full length; the ``steps`` column says so.
Each (path, new tokens) runs in its own process, after loading the model and a 2-token warm-up
batch; peak memory is that process's maximum resident set during generation (CPU: the high-water
mark is reset first where Linux allows, ``peak_reset``; glibc's mmap threshold is fixed so that freed
tensors leave the resident set) or the CUDA allocator's peak (GPU): ``peak`` as measured, ``growth``
minus what the process held before generating. ``kept logits`` is what each path holds by design:
steps × batch × vocabulary float32 for stored logits, one step's batch × vocabulary for rosd's engine. Both paths sample with the same seed: the table
says whether their ids are the same and how far apart their log-probs are.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen3Config

from rosd.engines.hf import HFEngine

SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=128, head_dim=16, tie_word_embeddings=True)
FULL = {"new_tokens": [64, 128, 256], "batch": 8, "vocab": 151_936, "prompt_tokens": 16}
SMOKE = {"new_tokens": [4], "batch": 2, "vocab": 1000, "prompt_tokens": 4}
PATHS = ("stored_logits", "streamed")
# A fixed glibc mmap threshold: every large tensor is its own mapping, unmapped when freed, so the
# resident set follows the live tensors (with the default, growing threshold freed memory stays resident).
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", **os.environ}


class StoredLogitsEngine(HFEngine):
    """The stored-logits alternative: ``output_logits=True``, log-probs picked out after the batch."""

    def _generate_batch(self, ids, mask, *, temperature, top_p, top_k, max_new_tokens):
        arguments = self.generate_arguments(ids, mask, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens)
        result = self.model.generate(**arguments, output_logits=True)
        new = result.sequences[:, ids.shape[1] :]
        chosen = torch.stack(
            [torch.log_softmax(logits.float() / max(temperature, 1e-6), dim=-1).gather(-1, new[:, t, None]).squeeze(-1)
             for t, logits in enumerate(result.logits)],
            dim=1,
        )
        return new.cpu(), chosen.cpu()


def write_random_model(folder: Path, vocab: int) -> Path:
    """A random-weight Qwen3-shaped model and a word-level tokenizer over its ids, as a model directory."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen3Config(**SHAPE, vocab_size=vocab), dtype=torch.float32)
    words = {"<pad>": 0, "<eos>": 1, **{f"t{i}": i for i in range(2, vocab)}}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(words, unk_token="<pad>")), pad_token="<pad>", eos_token="<eos>")
    model.generation_config.eos_token_id = model.config.eos_token_id = 1
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def reset_peak(device: str) -> bool:
    """Start the peak afresh (Linux: clear_refs 5 resets the resident-set high-water mark); False where it cannot."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def current_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated()
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
    except (OSError, StopIteration):
        return peak_bytes(device)


def peak_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_one(path: str, model_dir: str, new_tokens: int, sizes: dict, device: str) -> dict:
    engine_class = StoredLogitsEngine if path == "stored_logits" else HFEngine
    engine = engine_class(model_dir, device=device, dtype="bfloat16" if device.startswith("cuda") else "float32", batch_size=sizes["batch"])
    prompts = torch.randint(2, sizes["vocab"], (sizes["batch"], sizes["prompt_tokens"]), generator=torch.Generator().manual_seed(0)).tolist()
    kwargs = dict(n=1, temperature=1.0, top_p=1.0, seed=0)
    engine.generate(prompts, max_new_tokens=2, **kwargs)  # warm-up
    gc.collect()
    reset = reset_peak(device)
    before = current_bytes(device)
    started = time.perf_counter()
    samples = [s for group in engine.generate(prompts, max_new_tokens=new_tokens, **kwargs) for s in group]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = peak_bytes(device)
    return {
        "path": path, "new_tokens": new_tokens, "steps": max(len(s.ids) for s in samples), "seconds": seconds,
        "peak_bytes": peak, "growth_bytes": peak - before, "peak_reset": reset,
        "ids_sha1": hashlib.sha1(json.dumps([s.ids for s in samples]).encode()).hexdigest(),
        "logps": [s.logps for s in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and sizes: checks the script, measures nothing")
    parser.add_argument("--new-tokens", type=int, nargs="+")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--vocab", type=int)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--child", nargs=3, metavar=("PATH", "MODEL_DIR", "NEW_TOKENS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = dict(SMOKE if args.smoke else FULL)
    for key in ("new_tokens", "batch", "vocab"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    if args.child:
        path, model_dir, new_tokens = args.child
        print(json.dumps(run_one(path, model_dir, int(new_tokens), sizes, args.device)))
        return

    passed = ["--smoke"] * args.smoke + ["--batch", str(sizes["batch"]), "--vocab", str(sizes["vocab"]), "--device", args.device]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(write_random_model(Path(tmp) / "model", sizes["vocab"]))
        for new_tokens in sizes["new_tokens"]:
            for path in PATHS:
                command = [sys.executable, __file__, *passed, "--child", path, model_dir, str(new_tokens)]
                done = subprocess.run(command, capture_output=True, text=True, env=CHILD_ENV)
                if done.returncode:
                    sys.exit(f"{path} at {new_tokens} new tokens failed:\n{done.stderr[-3000:]}")
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    print(f"batch={sizes['batch']} vocab={sizes['vocab']} prompt={sizes['prompt_tokens']} device={args.device} model={SHAPE}")
    print(f"{'new':>5} {'path':>14} {'steps':>5} {'peak MiB':>9} {'growth MiB':>10} {'seconds':>8} {'kept logits MiB':>15} {'same ids':>8} {'max |Δ logp|':>12}")
    by_size = {(r["path"], r["new_tokens"]): r for r in rows}
    for r in rows:
        old = by_size[("stored_logits", r["new_tokens"])]
        same = r["ids_sha1"] == old["ids_sha1"]
        delta = max((abs(a - b) for x, y in zip(r["logps"], old["logps"]) for a, b in zip(x, y)), default=0.0) if same else float("nan")
        r["same_ids_as_stored_logits"], r["max_abs_logp_diff"] = same, delta
        step_bytes = sizes["batch"] * sizes["vocab"] * 4  # one step's float32 logits
        kept = r["steps"] * step_bytes if r["path"] == "stored_logits" else step_bytes
        r["kept_logits_bytes"] = kept
        print(f"{r['new_tokens']:>5} {r['path']:>14} {r['steps']:>5} {r['peak_bytes'] / 2**20:>9.1f} {r['growth_bytes'] / 2**20:>10.1f} "
              f"{r['seconds']:>8.2f} {kept / 2**20:>15.1f} {str(same):>8} {delta:>12.2e}")
    if args.out:
        report = {"sizes": sizes, "device": args.device, "model": SHAPE,
                  "results": [{k: v for k, v in r.items() if k != "logps"} for r in rows]}
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
