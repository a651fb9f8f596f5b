"""Running the workflow from tests: Snakemake on tests/configs/tiny.yaml (plus overlays) in a
directory of the test's own, with the `rosd` command of this Python."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "configs" / "tiny.yaml"
EXP = Path("results") / "tiny"


def snakemake_command(workdir: Path, *args: str, configs=()) -> list[str]:
    configfiles = [str(TINY), *map(str, configs)]
    return [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--cores", "2", *args, "--configfile", *configfiles,  # after the args: a target is not a config file
    ]


def environment() -> dict:
    # The rules call the `rosd` command installed beside this Python.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def run(workdir: Path, *args: str, configs=(), check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        snakemake_command(workdir, *args, configs=configs), env=environment(), capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def planned_jobs(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> count."""
    table = dry_run_output.split("Job stats:")[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE) if m.group(1) != "total"}


def shell_command(workdir: Path, target: str) -> list[str]:
    """The `rosd` command (argv after `rosd`, without its --log) of the job that makes ``target``
    (a path relative to ``workdir``), as a dry run with --force prints it."""
    printed = run(workdir, "-n", "-p", "--force", target).stdout
    for line in printed.splitlines():
        if "rosd --log" in line:
            return shlex.split(line[line.index("rosd --log") :])[3:]
    raise AssertionError(f"no rosd command printed for {target}:\n{printed[-2000:]}")


def processes_in(workdir: Path) -> dict[int, list[bytes]]:
    """Live processes whose cwd is the run's directory (its jobs, and the stage worker's forks
    running them): pid -> command line."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if Path(cwd) == workdir and cmdline != [b""]:  # a zombie has no command line
            found[int(proc.name)] = cmdline
    return found
