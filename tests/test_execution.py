"""How the rules ask to run (workflow/rules/execution.smk), read from Snakemake dry runs: GPUs per
job, the GPU pool prefix, the training launcher, and settings the trainer cannot run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.pipeline  # every test here starts Snakemake or another process

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "configs" / "tiny.yaml"
GPU_RULES = ("rollouts", "reflect", "teacher_score", "distill", "evaluate")
PREFIX = "${ROSD_GPUS:+rosd with-gpu --count "


def dry_run(tmp_path: Path, overlay: str) -> subprocess.CompletedProcess:
    (tmp_path / "overlay.yaml").write_text(overlay)
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--cores", "2",
         "-n", "-p", "--configfile", str(TINY), str(tmp_path / "overlay.yaml")],
        capture_output=True, text=True,
    )


def jobs(output: str) -> dict[str, tuple[dict, str]]:
    """rule -> (resources of its first job, that job's shell command)."""
    found = {}
    for block in re.split(r"\n(?=rule \w+:)", output):
        rule = re.match(r"rule (\w+):", block)
        if not rule or rule.group(1) in found:
            continue
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        shell = re.search(r"^Shell command: (.*)$", block, re.M)
        pairs = dict(p.split("=", 1) for p in resources.group(1).split(", ")) if resources else {}
        found[rule.group(1)] = (pairs, shell.group(1) if shell else "")
    return found


def test_cpu_runs_ask_for_no_gpu_and_run_their_commands_as_before(tmp_path):
    done = dry_run(tmp_path, "{}\n")
    assert done.returncode == 0, done.stderr[-3000:]
    planned = jobs(done.stdout)
    for rule in GPU_RULES:
        resources, shell = planned[rule]
        assert resources["gpu"] == "0", rule
        assert shell.startswith(PREFIX + "0 --} rosd "), shell  # with ROSD_GPUS unset, the prefix expands to nothing
    assert "gpu" not in planned["grade"][0]


def test_gpu_settings_set_each_rules_gpus_and_the_training_launcher(tmp_path):
    overlay = (
        "model: {device: cuda, dtype: bfloat16}\n"
        "generation: {backend: vllm, tensor_parallel_size: 2}\n"
        "train: {launcher: accelerate, num_processes: 4}\n"
    )
    done = dry_run(tmp_path, overlay)
    assert done.returncode == 0, done.stderr[-3000:]
    planned = jobs(done.stdout)
    expected = {"rollouts": 2, "reflect": 2, "evaluate": 2, "teacher_score": 1, "distill": 4}
    assert {rule: int(planned[rule][0]["gpu"]) for rule in expected} == expected
    for rule, gpus in expected.items():
        assert planned[rule][1].startswith(f"{PREFIX}{gpus} --}} "), rule
    accelerate = REPO / "config" / "accelerate_fsdp.yaml"
    assert accelerate.exists()
    assert (
        f"accelerate launch --config_file {accelerate} --num_processes 4 --main_process_port 0"
        " -m rosd.cli --log "
    ) in planned["distill"][1]


BLOCKS = "execution: {rounds_per_job: 2, evaluation_jobs: checkpoint}\n"


@pytest.mark.parametrize("resident", [False, True])
def test_a_block_of_rounds_holds_the_most_gpus_its_stages_need_and_launches_the_trainer(tmp_path, resident):
    """A block of stage processes starts the trainer for its distill stage; a resident block is
    itself started by the trainer's launcher (every training process runs it, rosd/jobs/blocks.py)."""
    overlay = (
        "model: {device: cuda, dtype: bfloat16}\n"
        "generation: {backend: vllm, tensor_parallel_size: 2}\n"
        "train: {launcher: accelerate, num_processes: 4}\n"
        f"execution: {{rounds_per_job: 2, evaluation_jobs: checkpoint, resident: {str(resident).lower()}}}\n"
    )
    done = dry_run(tmp_path, overlay)
    assert done.returncode == 0, done.stderr[-3000:]
    planned = jobs(done.stdout)
    assert {rule: int(planned[rule][0]["gpu"]) for rule in ("round_block", "evaluate_checkpoint")} == {"round_block": 4, "evaluate_checkpoint": 2}
    block = planned["round_block"][1]
    accelerate = REPO / "config" / "accelerate_fsdp.yaml"
    launcher = ["accelerate", "launch", "--config_file", str(accelerate), "--num_processes", "4", "--main_process_port", "0", "-m", "rosd.cli"]
    assert block.startswith(f"{PREFIX}4 --}} {' '.join(launcher) if resident else 'rosd'} --log ") and " run-rounds " in block
    assert '"trainer": ' + json.dumps(launcher) in block


def test_settings_the_trainer_cannot_run_stop_before_any_job(tmp_path):
    done = dry_run(tmp_path, "methods: [base, sdpo]\ntrain: {lora: {r: 8, alpha: 16, target_modules: [q_proj]}}\n")
    assert done.returncode != 0
    assert "config error: train.lora cannot train a method with an EMA teacher (sdpo)" in done.stderr
    assert "Traceback" not in done.stderr


def test_accelerate_config_only_launches_processes():
    """What can be checked of config/accelerate_fsdp.yaml without GPUs: accelerate reads it as a
    plain multi-GPU launch with no mixed precision of its own (rosd shards and casts itself;
    accelerate's FSDP or bf16 would never be applied, only mislead), and every key is one it knows."""
    pytest.importorskip("accelerate", reason="pip install 'rosd[train]'")
    from accelerate.commands.config.config_args import load_config_from_file

    path = REPO / "config" / "accelerate_fsdp.yaml"
    config = load_config_from_file(str(path))
    assert str(config.distributed_type) == "DistributedType.MULTI_GPU" and config.mixed_precision == "no"
    assert set(yaml.safe_load(path.read_text())) <= set(vars(config))


def test_slurm_profile_sizes_only_rules_the_workflow_has(tmp_path):
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    (tmp_path / "blocks.yaml").write_text(BLOCKS)
    rules = set()
    for overlays in ([], [str(tmp_path / "blocks.yaml")]):  # the per-stage rules, then the blocks' rules
        listed = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(TINY), *overlays, "--list-rules"],
            capture_output=True, text=True, check=True,
        )
        rules |= set(listed.stdout.split())
    assert profile["executor"] == "slurm"
    assert set(profile["set-resources"]) == {*GPU_RULES, "round_block", "evaluate_checkpoint"} <= rules
