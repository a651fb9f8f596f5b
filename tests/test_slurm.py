"""The pipeline through a real SLURM cluster: the shipped profile (workflow/profiles/slurm) with its
job sizes shrunk to a one-node test cluster (tests/slurm/start_cluster.sh: slurmctld + slurmd on
this machine, no accounting). The shrunken pipeline (tests/configs/tiny.yaml) must run every job in
a SLURM allocation and end with the same tables as a local run.

Needs root and Debian's slurm-wlm and munge (.ci/run installs them) and the SLURM executor plugin
(pip install 'rosd[slurm]'); skips with the reason otherwise. A few minutes: SLURM adds ~10 s a job.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from test_pipeline import EXP, REPO, environment, planned_jobs, run, snakemake_command
from tiny_model import shipped_theta0_exists, small_model_dir

SCRIPTS = REPO / "tests" / "slurm"


def missing() -> str | None:
    if os.geteuid() != 0:
        return "the test cluster's daemons run as root"
    for tool in ("slurmctld", "slurmd", "munged", "sbatch", "squeue"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install slurm-wlm munge)"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "the SLURM executor plugin is not installed (pip install 'rosd[slurm]')"
    if os.path.lexists("/etc/slurm/slurm.conf"):
        return "this machine has a SLURM configuration (/etc/slurm/slurm.conf) the test cluster would replace"
    return None


pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    started = subprocess.run([SCRIPTS / "start_cluster.sh", state], capture_output=True, text=True)
    try:
        if "has a SLURM configuration" in started.stderr:  # another session's test cluster came first
            pytest.skip(started.stderr.strip())
        assert started.returncode == 0, started.stdout + started.stderr
        yield state
    finally:
        subprocess.run([SCRIPTS / "stop_cluster.sh", state], capture_output=True)


def shrunk_profile(folder: Path) -> Path:
    """The shipped SLURM profile, its sizes shrunk to the 2-CPU test node, plus what this cluster
    without accounting needs: squeue for job status, no account, a short first status check."""
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    small = {"mem_mb": 2000, "runtime": 30, "cpus_per_task": 1}
    profile["default-resources"] = small
    profile["set-resources"] = {rule: small for rule in profile["set-resources"]}
    profile.update({
        "jobs": 4, "latency-wait": 5, "slurm-status-command": "squeue", "slurm-no-account": True,
        "slurm-init-seconds-before-status-checks": 1, "slurm-keep-successful-logs": True,
    })
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def test_pipeline_runs_in_slurm_allocations_with_the_local_tables(cluster, tmp_path, tmp_path_factory):
    overlays = []
    if not shipped_theta0_exists():  # then both runs start from the same small warm-started θ0
        overlays = [tmp_path / "model.yaml"]
        overlays[0].write_text(f"model: {{init: path, path: {small_model_dir(tmp_path_factory)}}}\n")
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    on_slurm.mkdir()
    expected = planned_jobs(run(on_slurm, "-n", configs=overlays).stdout)

    # The local run goes alongside: the SLURM run mostly waits on job status checks.
    local.mkdir()
    local_log = tmp_path / "local.log"
    with open(local_log, "w") as log:
        local_run = subprocess.Popen(snakemake_command(local, configs=overlays), env=environment(), stdout=log, stderr=log)
        profile = shrunk_profile(tmp_path / "profile")
        command = snakemake_command(on_slurm, "--profile", str(profile), configs=overlays)
        done = subprocess.run(command, env=environment(), capture_output=True, text=True)
        local_run.wait()
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    assert local_run.returncode == 0, local_log.read_text()[-5000:]

    # Every job but the target rule `all` was a SLURM job that completed, and only those.
    queue = subprocess.run(["squeue", "--states=all", "--noheader", "--format=%i|%T|%k"], capture_output=True, text=True, check=True)
    slurm_jobs = [line.split("|") for line in queue.stdout.split()]
    ran = {}
    for job_id, state, comment in slurm_jobs:
        assert state == "COMPLETED", (job_id, state, comment)
        rule = re.match(r"rule_(\w+?)(_wildcards_|$)", comment).group(1)
        ran[rule] = ran.get(rule, 0) + 1
    expected.pop("all")
    assert ran == expected
    logs = list((on_slurm / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert sorted(p.stem for p in logs) == sorted(job_id for job_id, _, _ in slurm_jobs)

    for table in ("comparison.csv", "evals.csv"):
        assert (on_slurm / EXP / "tables" / table).read_text() == (local / EXP / "tables" / table).read_text(), table
