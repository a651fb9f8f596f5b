"""Give each GPU job of a local run its own device(s) (docs/gpu_slurm.md, "GPUs per job": Snakemake only counts GPU jobs).

With ``ROSD_GPUS=0,1,2,3`` set, the GPU rules run their command as
``rosd with-gpu --count N -- <command>``. That locks N free slot files of the pool, one file per
device, with ``flock``; sets ``CUDA_VISIBLE_DEVICES`` to those devices; and replaces itself with the
command (exec). The locks belong to open files that the command inherits, so they are held exactly
as long as the command (and any child that inherits them) runs, and the kernel releases them when
it exits, however it exits: a crash or a kill included. The pool directory (``ROSD_GPU_POOL``,
default ``<tmp>/rosd-gpu-pool``) is shared by every run on the machine that uses the same devices.
Inside a SLURM job the command runs as it is: SLURM has already given it its devices.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2

# The prefix of a GPU rule's shell command (workflow/rules/execution.smk): `rosd with-gpu` when
# ROSD_GPUS is set, nothing otherwise (CPU runs, SLURM), so those commands are unchanged.
SNAKEMAKE_PREFIX = "${{ROSD_GPUS:+rosd with-gpu --count {resources.gpu} --}} "


def configured_devices() -> list[str]:
    devices = [d.strip() for d in os.environ.get("ROSD_GPUS", "").split(",") if d.strip()]
    if not devices:
        raise SystemExit("rosd with-gpu: set ROSD_GPUS to the devices to share, e.g. ROSD_GPUS=0,1,2,3")
    return devices


def pool_dir() -> Path:
    return Path(os.environ.get("ROSD_GPU_POOL") or Path(tempfile.gettempdir()) / "rosd-gpu-pool")


def _slot(pool: Path, device: str) -> Path:
    return pool / ("gpu-" + re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock")


def try_acquire(count: int, devices: list[str], pool: Path) -> list[tuple[str, int]] | None:
    """Lock ``count`` free devices' slots and return (device, open file descriptor) pairs; None when
    fewer are free. All or none: a job holding some slots while waiting for more could deadlock
    with another doing the same."""
    held = []
    for device in devices:
        fd = os.open(_slot(pool, device), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        held.append((device, fd))
        if len(held) == count:
            return held
    for _, fd in held:
        os.close(fd)
    return None


def acquire(count: int, devices: list[str], pool: Path) -> list[tuple[str, int]]:
    """Wait until ``count`` devices are free and lock them."""
    if count > len(devices):
        raise SystemExit(f"rosd with-gpu: a job asks for {count} GPUs but ROSD_GPUS has {len(devices)}: {','.join(devices)}")
    pool.mkdir(parents=True, exist_ok=True)
    waiting_since = None
    while (held := try_acquire(count, devices, pool)) is None:
        if waiting_since is None:
            waiting_since = time.time()
            log.info("waiting for %d free GPU(s) of %s (pool %s)", count, ",".join(devices), pool)
        time.sleep(POLL_SECONDS)
    if waiting_since is not None:
        log.info("waited %.1fs for a GPU", time.time() - waiting_since)
    return held


def exec_with_gpus(count: int, command: list[str]) -> None:
    """Run ``command`` in place of this process with ``count`` devices of its own."""
    if not command:
        raise SystemExit("rosd with-gpu: no command given; usage: rosd with-gpu --count N -- COMMAND ...")
    env = dict(os.environ)
    # Inside a SLURM allocation (ROSD_GPUS exported from the submitting shell), SLURM has already
    # given the job its devices.
    if count > 0 and "SLURM_JOB_ID" not in env:
        held = acquire(count, configured_devices(), pool_dir())
        for _, fd in held:
            os.set_inheritable(fd, True)  # the command keeps the locks for as long as it runs
        env["CUDA_VISIBLE_DEVICES"] = ",".join(device for device, _ in held)
        log.info("CUDA_VISIBLE_DEVICES=%s for: %s", env["CUDA_VISIBLE_DEVICES"], " ".join(command))
    sys.stderr.flush()
    os.execvpe(command[0], command, env)
