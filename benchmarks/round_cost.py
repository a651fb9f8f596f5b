"""What one training round costs as pipeline jobs, against the same work in one warm process.

    python benchmarks/round_cost.py [--config default|tiny] [--model world|qwen3-0.6b] [--backend hf|vllm] [--device cpu|cuda]
                                    [--rounds 3] [--repeats 2] [--rounds-only] [--stages S ...] [--out FILE]

It takes rosd's rounds of the default config at 16 prompts (16 x 8 rollouts of up to 96 tokens; ``tiny``:
tests/configs/tiny.yaml, 4 x 4 of up to 48): Snakemake makes θ0 and the data and prints each round's
stage commands as its rules would run them. It times round 1's five stage commands (rollouts, grade,
reflect, teacher-score, distill) three ways, each on the same inputs:

- **pipeline**: each command as its own process (`execution.stage_worker: false`): process start,
  imports, the lazy imports inside the first `from_pretrained`, model loads, the work, the exit.
- **worker**: each command as the rules run it by default, `rosd <stage>` handed to a warm stage
  worker (rosd/jobs/worker.py) that forks a child for it: the command's own start, the fork, model loads,
  the work.
- **fused**: the same commands called in one Python process (`rosd.cli.main`) that already ran them
  once, so imports are paid and only the work (and each stage's model load from disk) is timed.
- **resident**: rounds 1..``--rounds`` called in one process that holds its models
  (`execution.resident`, rosd/stages/resident.py): the engine started once, the new weights pushed
  into it after each round, no checkpoint read or written between rounds. Rounds 2.. are compared
  with the same rounds fused; the engine's start and one push are timed apart.

Each timing is the best of ``--repeats``. The difference from fused is the round's fixed cost per
stage; the ratios pipeline/fused and worker/fused say what is left of it. Each pipeline run is
instrumented, splitting its time into phases: the interpreter's start, the imports of the stage's
module, the stage command (its lazy imports, model loads and work) and the exit after it returned. Model load and checkpoint write are timed per GB.

``--model qwen3-0.6b`` makes θ0 a Qwen3-0.6B-shaped model with random weights (the world's
tokenizer; 2.4 GB in float32): generation runs to the token limit and training moves 0.6 B
parameters, so the work dominates more. ``--backend vllm`` generates with vLLM (its CPU build here:
run it in the vLLM environment of docs/real_models.md): every generating stage of the other three
ways starts an engine, the resident rounds start one. Snakemake's own gaps between jobs are not
measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ("rollouts", "grade", "reflect", "teacher-score", "distill")
OVERLAY = {
    "methods": ["rosd"], "rounds": 1, "benchmarks": ["math"], "tracking": {"mlflow": False},
    "evaluation": {"every_steps": None}, "execution": {"rounds_per_job": 1, "resident": False},  # stage jobs, to read their commands
}  # fmt: skip
# The default config's round at 16 prompts, as measured against TRL's SDPOTrainer on 16 x 8 rollouts.
DEFAULT_BATCH = {"train": {"batch_prompts": 16}}
QWEN3_06B = dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                 intermediate_size=3072, head_dim=128, tie_word_embeddings=True, max_position_embeddings=4096)


# A cold stage run with timestamps (CLOCK_MONOTONIC, shared by processes): started, imported, returned.
PHASES = """
import time; started = time.monotonic()
import importlib, json, sys
from rosd.cli import main
from rosd.jobs.registry import STAGES
argv = json.loads(sys.argv[1])
importlib.import_module(STAGES[argv[0]].module)
imported = time.monotonic()
main(argv)
print(json.dumps([started, imported, time.monotonic()]))
"""


def environment() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def snakemake(workdir: Path, configs: list[Path], *args: str) -> str:
    command = [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2",
        *args, "--configfile", *map(str, configs),  # after the args: a target is not a config file
    ]  # fmt: skip
    done = subprocess.run(command, env=environment(), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"snakemake failed:\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def random_qwen3(out: Path) -> None:
    """θ0 = a Qwen3-0.6B-shaped model with random weights and the world's tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    from rosd.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(REPO / "rosd" / "world" / "theta0"))
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=151_936, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **QWEN3_06B)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out)
    tokenizer.save_pretrained(out)


def last_metrics(experiment: str, rounds: int) -> str:
    """The file the run's last distill job writes: the target that runs every round."""
    return f"results/{experiment}/runs/rosd/math/seed0/round{rounds}/metrics.json"


def stage_commands(workdir: Path, configs: list[Path], target: str, rounds: int) -> list[dict[str, list[str]]]:
    """Each round's stage commands as the rules run them, without their --log."""
    printed = snakemake(workdir, configs, target, "-n", "-p", "--forcerun", "rollouts")  # --forcerun takes several values
    commands = [{} for _ in range(rounds)]
    for line in printed.splitlines():
        if "rosd --log" not in line:
            continue
        argv = shlex.split(line[line.index("rosd --log") :])[3:]  # drop rosd --log FILE
        if argv[0] in STAGES:
            out = argv[argv.index("--out" if "--out" in argv else "--out-metrics") + 1]
            commands[int(re.search(r"/round(\d+)/", out).group(1)) - 1][argv[0]] = argv
    for index, round_commands in enumerate(commands):
        if missing := set(STAGES) - set(round_commands):
            sys.exit(f"no command printed for {sorted(missing)} of round {index + 1}:\n{printed[-2000:]}")
    return commands


def timed_rounds(commands: list[dict[str, list[str]]], run) -> list[float]:
    """Seconds of each round's five commands, called in this process by ``run``."""
    times = []
    for index, round_commands in enumerate(commands):
        started = time.perf_counter()
        for stage in STAGES:
            run(round_commands[stage])
        times.append(time.perf_counter() - started)
        print(f"round {index + 1}: {times[-1]:.2f} s", flush=True)
    return times


def engine_costs(commands: dict[str, list[str]]) -> tuple[float, float]:
    """Seconds to start the round's engine on its model, and to push checkpoint 1's weights into it."""
    from rosd.models.loading import load_model
    from rosd.stages import resident

    argv = commands["rollouts"]
    settings = json.loads(argv[argv.index("--settings") + 1])
    started = time.perf_counter()
    engine = resident.engine(argv[argv.index("--model") + 1], settings)
    start_s = time.perf_counter() - started
    weights = load_model(commands["distill"][commands["distill"].index("--out-model") + 1]).state_dict()
    started = time.perf_counter()
    engine.load_weights(weights)
    return start_s, time.perf_counter() - started


def phases(argv: list[str]) -> dict[str, float]:
    """One instrumented cold run of a stage: seconds of each phase."""
    before = time.monotonic()
    done = subprocess.run([sys.executable, "-c", PHASES, json.dumps(argv)], env=environment(), check=True, capture_output=True, text=True)
    after = time.monotonic()
    started, imported, returned = json.loads(done.stdout.strip().splitlines()[-1])
    return {"start": started - before, "imports": imported - started, "stage": returned - imported, "exit": after - returned}


def timed_through_worker(commands: dict[str, list[str]], stages: list[str], repeats: int, log: Path) -> dict[str, list[float]]:
    """Each stage command as the rules run it by default: `rosd <stage>` handed to a warm stage
    worker (rosd/jobs/worker.py), started as Snakemake's onstart starts it and timed once it is ready."""
    from rosd.jobs import worker

    process = worker.start(str(log))
    try:
        while not os.path.exists(os.environ[worker.ENV]):
            if process.poll() is not None:
                sys.exit(f"the stage worker failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        times = {stage: [] for stage in stages}
        for _ in range(repeats):
            for stage in stages:
                started = time.perf_counter()
                subprocess.run(["rosd", *commands[stage]], env=environment(), check=True, capture_output=True)
                times[stage].append(time.perf_counter() - started)
                print(f"worker {stage}: {times[stage][-1]:.2f} s", flush=True)
        return times
    finally:
        worker.stop(process)


def best(times: list[float]) -> float:
    return round(min(times), 3)


def dir_gb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e9


def one_round_three_ways(commands: dict[str, list[str]], stages: list[str], repeats: int, workdir: Path) -> dict:
    """Round 1's commands of ``stages`` as fresh processes, through the stage worker, and fused;
    the model's load and write speed."""
    from rosd.cli import main as rosd_command

    # Warm-up, in this process: imports and lazy imports paid for the fused way, and every stage's
    # inputs written for the timed ones.
    for stage in STAGES:
        rosd_command(commands[stage])
    cold, split = {stage: [] for stage in stages}, {}
    for _ in range(repeats):
        for stage in stages:
            run_phases = phases(commands[stage])
            cold[stage].append(sum(run_phases.values()))
            if cold[stage][-1] == min(cold[stage]):
                split[stage] = run_phases  # the phases of the best run
            print(f"pipeline {stage}: {cold[stage][-1]:.2f} s", flush=True)

    through_worker = timed_through_worker(commands, stages, repeats, workdir / "stage_worker.log")
    warm = {stage: [] for stage in stages}
    for _ in range(repeats):
        for stage in stages:
            started = time.perf_counter()
            rosd_command(commands[stage])
            warm[stage].append(time.perf_counter() - started)
            print(f"fused {stage}: {warm[stage][-1]:.2f} s", flush=True)

    from rosd.models.loading import load_model

    model_dir = Path(commands["rollouts"][commands["rollouts"].index("--model") + 1])
    gb = dir_gb(model_dir)
    started = time.perf_counter()
    model = load_model(str(model_dir))
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    model.save_pretrained(workdir / "write_check")
    write_s = time.perf_counter() - started

    stages = {
        s: {"pipeline_s": best(cold[s]), "worker_s": best(through_worker[s]), "fused_s": best(warm[s]),
            "fixed_s": round(best(cold[s]) - best(warm[s]), 3),
            "phases_s": {k: round(v, 3) for k, v in split[s].items()}}
        for s in stages
    }  # fmt: skip
    pipeline, fused = sum(v["pipeline_s"] for v in stages.values()), sum(v["fused_s"] for v in stages.values())
    through = sum(v["worker_s"] for v in stages.values())
    return {
        "model_gb": round(gb, 3), "stages": stages,
        "round_pipeline_s": round(pipeline, 3), "round_worker_s": round(through, 3), "round_fused_s": round(fused, 3),
        "ratio": round(pipeline / fused, 2), "worker_ratio": round(through / fused, 2),
        "fixed_s_per_stage": round(statistics.fmean(v["fixed_s"] for v in stages.values()), 2),
        "load_s_per_gb": round(load_s / gb, 2), "write_s_per_gb": round(write_s / gb, 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=["default", "tiny"], default="default")
    parser.add_argument("--model", choices=["world", "qwen3-0.6b"], default="world")
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf", help="generation.backend")
    parser.add_argument("--device", default="cpu", help="model.device (cuda: every stage on the GPU)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds run; rounds 2.. compare resident with fused")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both ways (Snakemake gives a job without `threads` 1)")
    parser.add_argument("--rounds-only", action="store_true", help="only rounds fused against resident (no single-round comparison)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="the stages of the single-round comparison")
    parser.add_argument("--out", help="also write the result as JSON")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: rounds 2.. compare the resident path with the fused one")
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(args.threads))

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        overlay = dict(OVERLAY, rounds=args.rounds, generation={"backend": args.backend}, model={"device": args.device},
                       **(DEFAULT_BATCH if args.config == "default" else {}))
        if args.model == "qwen3-0.6b":
            random_qwen3(workdir / "qwen3_random")
            overlay["model"].update(init="path", path=str(workdir / "qwen3_random"))
        overlay_file = workdir / "overlay.json"
        overlay_file.write_text(json.dumps(overlay))
        configs = [REPO / "tests" / "configs" / "tiny.yaml"] if args.config == "tiny" else []
        configs = [REPO / "config" / "config.yaml", *configs, overlay_file]
        print("making θ0 and the data through Snakemake ...", flush=True)
        target = last_metrics(args.config, args.rounds)  # the experiment is named after the config
        # Only what round 1 reads: the rounds themselves are run by the ways timed below, in order.
        snakemake(workdir, configs, target, "--omit-from", "rollouts")
        by_round = stage_commands(workdir, configs, target, args.rounds)
        os.chdir(workdir)
        result = {} if args.rounds_only else one_round_three_ways(by_round[0], args.stages, args.repeats, workdir)
        from rosd.cli import main as rosd_command

        fused_rounds = timed_rounds(by_round, rosd_command)  # round 1 also pays the imports
        from rosd.stages import resident

        start_s, push_s = engine_costs(by_round[0])
        with resident.hold(set()):  # last: its rounds leave checkpoints whose weights only it held
            resident_rounds = timed_rounds(by_round, rosd_command)

    result = {
        "config": args.config, "model": args.model, "backend": args.backend, "device": args.device, **result,
        # rounds 2..: the same work both ways, models loaded by each stage (fused) or held (resident)
        "rounds": args.rounds, "fused_rounds_s": [round(t, 3) for t in fused_rounds],
        "resident_rounds_s": [round(t, 3) for t in resident_rounds],
        "resident_ratio": round(sum(resident_rounds[1:]) / sum(fused_rounds[1:]), 3),
        "engine_start_s": round(start_s, 3), "push_s": round(push_s, 3),
        "repeats": args.repeats, "threads": args.threads, "cpus": os.cpu_count(),
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if not args.rounds_only:
        print(f"round: pipeline {result['round_pipeline_s']:.1f} s, through the stage worker {result['round_worker_s']:.1f} s, "
              f"fused {result['round_fused_s']:.1f} s, ratios {result['ratio']:.2f}x and {result['worker_ratio']:.2f}x "
              f"(fixed cost {result['fixed_s_per_stage']:.1f} s a stage)")
    print(f"rounds 2-{args.rounds}: resident {sum(resident_rounds[1:]):.1f} s, fused {sum(fused_rounds[1:]):.1f} s "
          f"({result['resident_ratio']:.2f}x), engine start {start_s:.2f} s, weight push {push_s:.3f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
