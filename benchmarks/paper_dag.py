"""How long Snakemake takes to plan the paper's full matrix: a dry run (``snakemake -n``) of
config/paper_qwen3_8b.yaml with every paper method, 3 seeds, the reference's step budgets and
evaluation every 10 steps. It prints the jobs per rule, the seconds and the peak memory.

    python benchmarks/paper_dag.py [--seeds 3] [--out FILE]     # the full matrix: minutes on 2 cores
    python benchmarks/paper_dag.py --seeds 1 --rounds 20        # a small one, to check the script
    python benchmarks/paper_dag.py --per-stage                  # five jobs a round, one per benchmark

The preset plans blocks of 10 rounds as one job and one evaluation job per checkpoint
(``execution.rounds_per_job: 10``, ``evaluation_jobs: checkpoint``); ``--per-stage`` plans the
default rules instead (``rounds_per_job: 1``, ``evaluation_jobs: benchmark``), for comparison.

What it changes in the preset, and why (none of it changes the jobs' number or shape):
- ``methods``: base and the six trained presets that can read these targets (opsd needs dataset
  solutions, which SciKnowEval and ToolUse do not have: the workflow refuses it).
- ``rounds.tooluse``: its train split is not in this checkout, so it gets chemistry's 590 rounds
  (the largest budget; the reference's 5 epochs over its rows).
No data or model is read: a dry run needs only the names.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
METHODS = ["base", "rosd", "sdpo", "grpo", "rosd_no_mask", "rosd_reflection_only", "rosd_solution_and_reflection"]


def overlay(seeds: int, rounds: int | None, per_stage: bool = False) -> dict:
    paper = yaml.safe_load((REPO / "config" / "paper_qwen3_8b.yaml").read_text())
    budget = {t: r for t, r in paper["rounds"].items() if isinstance(r, int)}
    budget["tooluse"] = max(budget.values())
    if rounds is not None:
        budget = {t: min(r, rounds) for t, r in budget.items()}
    matrix = {"methods": METHODS, "seeds": list(range(seeds)), "rounds": budget}
    if per_stage:
        matrix["execution"] = {"rounds_per_job": 1, "evaluation_jobs": "benchmark"}
    return matrix


def dry_run(seeds: int, rounds: int | None, per_stage: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        extra = Path(workdir) / "matrix.yaml"
        extra.write_text(yaml.safe_dump(overlay(seeds, rounds, per_stage)))
        command = [
            sys.executable, "-m", "snakemake", "-n", "-s", str(REPO / "Snakefile"), "--directory", workdir,
            "--configfile", str(REPO / "config" / "config.yaml"), str(REPO / "config" / "paper_qwen3_8b.yaml"), str(extra),
        ]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"the dry run failed:\n{done.stderr[-3000:]}")
    table = (done.stdout + done.stderr).split("Job stats:")[-1]
    jobs = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return {"seeds": seeds, "rounds": rounds, "per_stage": per_stage, "jobs": jobs, "seconds": round(seconds, 1), "peak_rss_gib": round(peak_gib, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, help="cap every target's rounds (a smaller DAG)")
    parser.add_argument("--per-stage", action="store_true", help="five jobs a round and one per benchmark (the default rules)")
    parser.add_argument("--out", help="also write the result as JSON")
    args = parser.parse_args()
    result = dry_run(args.seeds, args.rounds, args.per_stage)
    total = result["jobs"].get("total", 0)
    print(json.dumps(result, indent=2))
    print(f"{total} jobs planned in {result['seconds']} s ({1000 * result['seconds'] / max(total, 1):.2f} ms a job), peak {result['peak_rss_gib']} GiB")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
