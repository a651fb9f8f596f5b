"""The local GPU pool (rosd/jobs/gpu_pool.py): Snakemake counts GPU jobs, the pool gives each its devices.

No GPU is needed: the devices are names in ROSD_GPUS, and each job records the CUDA_VISIBLE_DEVICES
it was given and when it ran.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rosd.jobs.gpu_pool import try_acquire

pytestmark = pytest.mark.pipeline  # every test here starts Snakemake or another process

RECORD = """import json, os, sys, time
start = time.time()
time.sleep(1.0)
json.dump({"devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}, open(sys.argv[1], "w"))
"""

# Four GPU jobs through the GPU rules' own command prefix.
SNAKEFILE = """from rosd.jobs.gpu_pool import SNAKEMAKE_PREFIX

rule all:
    input: expand("job{{i}}.json", i=range(4))

rule gpu_job:
    output: "job{{i}}.json"
    resources: gpu=1
    shell: SNAKEMAKE_PREFIX + "{python} record.py {{output}}"
"""


def environment(tmp_path: Path, devices: str) -> dict:
    env = dict(os.environ, ROSD_GPUS=devices, ROSD_GPU_POOL=str(tmp_path / "pool"))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.pop("SLURM_JOB_ID", None)  # inside a SLURM job the pool stands aside
    return env


def with_gpu(tmp_path, devices, count, *command, **popen):
    rosd = os.path.join(os.path.dirname(sys.executable), "rosd")
    return [rosd, "with-gpu", "--count", str(count), "--", *command], dict(env=environment(tmp_path, devices), **popen)


@pytest.mark.parametrize("gpu_limit", [2, 4], ids=["snakemake-limit-2", "snakemake-limit-4-pool-alone"])
def test_four_jobs_on_two_devices_never_share_one(tmp_path, gpu_limit):
    (tmp_path / "record.py").write_text(RECORD)
    (tmp_path / "Snakefile").write_text(SNAKEFILE.format(python=sys.executable))
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "4", "--resources", f"gpu={gpu_limit}", "--directory", str(tmp_path),
         "-s", str(tmp_path / "Snakefile")],
        env=environment(tmp_path, "0,1"), capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(4)]
    assert all(job["devices"] in ("0", "1") for job in jobs)
    overlapping = [(a, b) for a, b in itertools.combinations(jobs, 2) if a["start"] < b["end"] and b["start"] < a["end"]]
    assert overlapping, "the jobs ran one after another: nothing was tested"
    assert all(a["devices"] != b["devices"] for a, b in overlapping)


def device_is_free(pool: Path, device: str) -> bool:
    held = try_acquire(1, [device], pool) if pool.exists() else []
    for _, fd in held or []:
        os.close(fd)
    return held is not None


def _command(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]


def test_a_killed_job_releases_its_device(tmp_path):
    args, kwargs = with_gpu(tmp_path, "7", 1, "sleep", "60")
    holder = subprocess.Popen(args, **kwargs)
    try:
        deadline = time.time() + 30
        while device_is_free(tmp_path / "pool", "7"):
            assert time.time() < deadline, "the job never locked its device"
            time.sleep(0.05)
        # the lock is held by `sleep` itself: rosd with-gpu replaced itself with the command. The
        # lock is taken just before the exec, so the command line may still be changing.
        while _command(holder.pid) != b"sleep" and time.time() < deadline:
            time.sleep(0.05)
        assert _command(holder.pid) == b"sleep"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    args, kwargs = with_gpu(tmp_path, "7", 1, "sh", "-c", "echo $CUDA_VISIBLE_DEVICES")
    assert subprocess.run(args, capture_output=True, text=True, timeout=10, **kwargs).stdout.strip() == "7"


def test_a_job_gets_as_many_distinct_devices_as_it_asks_for_and_slurms_stand(tmp_path):
    args, kwargs = with_gpu(tmp_path, "0,1,2", 2, "sh", "-c", "echo $CUDA_VISIBLE_DEVICES")
    assert subprocess.run(args, capture_output=True, text=True, timeout=10, **kwargs).stdout.strip() == "0,1"
    args, kwargs = with_gpu(tmp_path, "0,1", 1, "sh", "-c", "echo ${CUDA_VISIBLE_DEVICES-unset}")
    kwargs["env"].update(SLURM_JOB_ID="42", CUDA_VISIBLE_DEVICES="5")  # SLURM's choice stands
    assert subprocess.run(args, capture_output=True, text=True, timeout=10, **kwargs).stdout.strip() == "5"
    args, kwargs = with_gpu(tmp_path, "0,1", 3, "true")
    failed = subprocess.run(args, capture_output=True, text=True, timeout=10, **kwargs)
    assert failed.returncode != 0
    assert failed.stderr.strip().splitlines()[-1] == "rosd with-gpu: a job asks for 3 GPUs but ROSD_GPUS has 2: 0,1"
