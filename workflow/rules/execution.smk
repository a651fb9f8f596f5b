# Where and how jobs run: GPUs per job, the local GPU pool, the training launcher, per-rule conda
# environments. Nothing here changes what a stage computes, so none of it is a stage setting.
import os
import shlex
import sys

from rosd.io import lifeline

from rosd.jobs import worker
from rosd.jobs.gpu_pool import SNAKEMAKE_PREFIX
from rosd.jobs.planning import RESIDENT_ENV

# A GPU job's command runs through `rosd with-gpu` (rosd/jobs/gpu_pool.py) when ROSD_GPUS is set: one
# machine, several GPUs, each GPU job gets its own device(s). Unset, the prefix is empty.
GPU_POOL = SNAKEMAKE_PREFIX

# Torch threads of a model job (Snakemake caps them at --cores and exports OMP_NUM_THREADS).
MODEL_THREADS = config["execution"]["threads"]

ACCELERATE_CONFIG = os.path.join(workflow.basedir, "config", "accelerate_fsdp.yaml")

# Jobs die with this Snakemake (rosd/io/lifeline.py): they find it by ancestry, or by this variable
# when it died before they started.
lifeline.export_for_jobs()

# The --use-conda environments install this checkout (workflow/envs/*.post-deploy.sh).
os.environ.setdefault("ROSD_SOURCE", workflow.basedir)


def gpus(stage):
    """GPUs one job of a stage ("generation", "scoring" or "training") asks for: none on the CPU; a
    vLLM engine's tensor-parallel group; the training processes under accelerate; else one."""
    if not config["model"]["device"].startswith("cuda"):
        return 0
    if stage == "generation" and config["generation"]["backend"] == "vllm":
        return config["generation"]["tensor_parallel_size"]
    if stage == "training" and config["train"]["launcher"] == "accelerate":
        return config["train"]["num_processes"]
    return 1


def gpu_command(*parts):
    """A GPU rule's shell command (its parts joined), run through the GPU pool (GPU_POOL above)."""
    return "".join((GPU_POOL, *parts))


def conda_env(stage):
    """The --use-conda environment of a stage's rules (paths relative to workflow/rules/)."""
    return "../envs/gpu.yaml" if gpus(stage) else "../envs/cpu.yaml"


def trainer():
    """The command that runs `rosd distill`: rosd itself, or accelerate launching it over the GPUs."""
    train = config["train"]
    if train["launcher"] == "none":
        return "rosd"
    return (
        f"accelerate launch --config_file {shlex.quote(ACCELERATE_CONFIG)} --num_processes {train['num_processes']}"
        " --main_process_port 0 -m rosd.cli"
    )


def block_runner():
    """The command that runs a block of rounds: under resident blocks, the trainer's (every training
    process runs the block, rosd/jobs/blocks.py); else rosd, whose stages start the trainer's."""
    return trainer() if config["execution"]["resident"] else "rosd"


def stage_worker_wanted():
    """Whether this run starts a stage worker (`execution.stage_worker`, rosd/jobs/worker.py): only for
    jobs run here, by this Snakemake's Python (not under --use-conda or a container)."""
    mode = config["execution"]["stage_worker"]
    if mode is False or not workflow.local_exec or workflow.deployment_settings.deployment_method:
        return False
    return mode is True or (sys.platform.startswith("linux") and config["model"]["device"] == "cpu")


_stage_worker = []
# A block of rounds holds its models in memory (rosd/stages/resident.py). Read by the block's process
# from its environment, not its settings: it changes no result, so changing it reruns no stage.
os.environ[RESIDENT_ENV] = "1" if config["execution"]["resident"] else "0"


onstart:
    if stage_worker_wanted():
        _stage_worker.append(worker.start(f"{EXP}/logs/stage_worker.log"))


onsuccess:
    for _process in _stage_worker:
        worker.stop(_process)


onerror:
    for _process in _stage_worker:
        worker.stop(_process)
