"""The pipeline through a real SLURM cluster: the shipped profile (workflow/profiles/slurm) with its
job sizes shrunk to a one-node test cluster (tests/slurm/start_cluster.sh: slurmctld + slurmd on
this machine, no accounting). The shrunken pipeline (tests/configs/tiny.yaml, rosd and base only, one
round), run as the paper presets run on a cluster (a block of rounds per job, here with its models
resident, and one evaluation job per checkpoint), must run every job but the local rules in a SLURM allocation and end with the rows of
the local per-stage run's tables (tests/conftest.py's `finished`, which also trains opsd and a second
round: a method's rows do not depend on another method or on later rounds; blocks write the
per-stage bytes, tests/test_round_blocks.py).

Needs root and Debian's slurm-wlm and munge (.ci/run installs them) and the SLURM executor plugin
(pip install 'rosd[slurm]'); skips with the reason otherwise. A few minutes: SLURM adds 10-20 s a job (the executor's status checks back off by 10 s).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pipeline_run import EXP, REPO, environment, planned_jobs, run, snakemake_command

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


pytestmark = [pytest.mark.pipeline, pytest.mark.skipif(missing() is not None, reason=missing() or "")]


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


def test_pipeline_runs_in_slurm_allocations_with_the_local_tables(cluster, finished, tmp_path):
    overlay = tmp_path / "methods.yaml"
    # The paper presets' execution (config/paper_*.yaml): rounds in blocks, one evaluation job per
    # checkpoint; the block's models resident (execution.resident), as a one-process trainer can.
    overlay.write_text("methods: [base, rosd]\nrounds: 1\nexecution: {rounds_per_job: 10, evaluation_jobs: checkpoint, resident: true}\n")
    on_slurm = tmp_path / "slurm"
    on_slurm.mkdir()
    expected = planned_jobs(run(on_slurm, "-n", configs=[overlay]).stdout)
    profile = shrunk_profile(tmp_path / "profile")
    done = subprocess.run(snakemake_command(on_slurm, "--profile", str(profile), configs=[overlay]), env=environment(), capture_output=True, text=True)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"

    # Every job but the local rules was a SLURM job that completed, and only those.
    queue = subprocess.run(["squeue", "--states=all", "--noheader", "--format=%i|%T|%k"], capture_output=True, text=True, check=True)
    slurm_jobs = [line.split("|") for line in queue.stdout.split()]
    ran = {}
    for job_id, state, comment in slurm_jobs:
        assert state == "COMPLETED", (job_id, state, comment)
        rule = re.match(r"rule_(\w+?)(_wildcards_|$)", comment).group(1)
        ran[rule] = ran.get(rule, 0) + 1
    for local_rule in ("all", "keep_checkpoint", "aggregate", "plots", "track"):  # run by Snakemake itself
        expected.pop(local_rule)
    assert ran == expected
    logs = list((on_slurm / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert sorted(p.stem for p in logs) == sorted(job_id for job_id, _, _ in slurm_jobs)

    for table in ("evals.csv", "rounds.csv"):
        slurm_rows = pd.read_csv(on_slurm / EXP / "tables" / table)
        local_rows = pd.read_csv(finished / EXP / "tables" / table)
        local_rows = local_rows[local_rows["method"].isin(["base", "rosd"]) & (local_rows["round"] <= 1)].reset_index(drop=True)
        assert len(slurm_rows) > 0
        pd.testing.assert_frame_equal(slurm_rows, local_rows, check_exact=True, obj=table)
