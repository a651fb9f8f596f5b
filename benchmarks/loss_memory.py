"""Peak memory and time of the distillation loss, chunked over tokens vs naive, forward + backward.

    python benchmarks/loss_memory.py [--tokens 4096] [--vocab 151936] [--hidden 1024] [--chunk 1024]

Each variant runs in its own process; peak memory is that process's maximum resident set (CPU) or
the CUDA allocator's peak (GPU), minus what it held before the loss. Reported as measured, with the
naive/chunked ratios. The loss is the reference's: student top-100 + tail, generalized JSD, α=0.5.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from rosd.method.losses import add_tail, chunked_over_tokens, generalized_jsd


def peak_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_variant(variant: str, tokens: int, vocab: int, hidden_size: int, chunk: int, device: str) -> dict:
    torch.manual_seed(0)
    head = torch.nn.Linear(hidden_size, vocab, bias=False).to(device)
    hidden = torch.randn(tokens, hidden_size, device=device, requires_grad=True)
    support = torch.randint(0, vocab, (tokens, 100), device=device)
    teacher = torch.log_softmax(torch.randn(tokens, 101, device=device), dim=-1)

    def token_fn(h, start, stop):
        logp = torch.log_softmax(head(h).float(), dim=-1)
        return generalized_jsd(add_tail(logp.gather(-1, support[start:stop])), teacher[start:stop], 0.5)

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = peak_bytes(device)
    started = time.perf_counter()
    if variant == "naive":
        loss = token_fn(hidden, 0, tokens).mean()
    else:
        loss = chunked_over_tokens(hidden, token_fn, chunk).mean()
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return {"variant": variant, "seconds": time.perf_counter() - started, "peak_bytes": peak_bytes(device) - before, "loss": loss.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variant", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.tokens, args.vocab, args.hidden, args.chunk, args.device)))
        return
    results = {}
    for variant in ("naive", "chunked"):
        out = subprocess.run([sys.executable, __file__, "--variant", variant, *sys.argv[1:]], capture_output=True, text=True, check=True)
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    naive, chunked = results["naive"], results["chunked"]
    print(f"tokens={args.tokens} vocab={args.vocab} hidden={args.hidden} chunk={args.chunk} device={args.device}")
    for r in (naive, chunked):
        print(f"{r['variant']:>8}: peak {r['peak_bytes'] / 2**30:6.2f} GiB  time {r['seconds']:6.2f} s  loss {r['loss']:.6f}")
    print(f"peak memory naive/chunked = {naive['peak_bytes'] / max(chunked['peak_bytes'], 1):.2f}x; time naive/chunked = {naive['seconds'] / chunked['seconds']:.2f}x")


if __name__ == "__main__":
    main()
