"""The rosd command on bad input: exit 2, one line on stderr, no traceback, nothing written;
``--log FILE``; and no orphans: a stage process stops when the Snakemake that started it is gone.

Nothing here loads a model: the stages fail on their input before any heavy import."""

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rosd import cli
from rosd.io import lifeline

ROSD = [sys.executable, "-m", "rosd.cli"]
SETTINGS = json.dumps({"seed": 0})


@pytest.fixture
def files(tmp_path):
    """A directory with an existing model dir, JSONL file and exp dir, and nothing else."""
    (tmp_path / "model").mkdir()
    (tmp_path / "exp").mkdir()
    (tmp_path / "rows.jsonl").write_text('{"a": 1}\n')
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n\n{"a": \n')
    (tmp_path / "table.csv").write_text("a\n1\n")
    return tmp_path


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _bad_input(argv, capsys, root) -> str:
    """Run rosd in process; it must exit 2 with one line on stderr and write nothing."""
    before = _listing(root)
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert _listing(root) == before
    return _one_line(captured.err)


# (argv with {d} for the directory, what the line must contain)
CASES = {
    "grade missing rollouts": (["grade", "--rollouts", "{d}/none.jsonl", "--out", "{d}/out.jsonl", "--settings", SETTINGS], "--rollouts {d}/none.jsonl: no such file"),
    "rollouts missing model": (["rollouts", "--model", "{d}/nomodel", "--data", "{d}/rows.jsonl", "--out", "{d}/out.jsonl", "--settings", SETTINGS], "--model {d}/nomodel: no such file"),
    "rollouts missing data": (["rollouts", "--model", "{d}/model", "--data", "{d}/none.jsonl", "--out", "{d}/out.jsonl", "--settings", SETTINGS], "--data {d}/none.jsonl"),
    "reflect missing graded": (["reflect", "--model", "{d}/model", "--graded", "{d}/none.jsonl", "--out", "{d}/out.jsonl", "--settings", SETTINGS], "--graded {d}/none.jsonl"),
    "teacher-score missing reflections": (["teacher-score", "--teacher", "{d}/model", "--student", "{d}/model", "--reflections", "{d}/none.jsonl", "--out", "{d}/t.pt", "--settings", SETTINGS], "--reflections {d}/none.jsonl"),
    "distill missing teacher scores": (["distill", "--model", "{d}/model", "--reflections", "{d}/rows.jsonl", "--teacher-scores", "{d}/none.pt", "--out-model", "{d}/ckpt", "--out-metrics", "{d}/m.json", "--settings", SETTINGS], "--teacher-scores {d}/none.pt"),
    "evaluate missing data": (["evaluate", "--model", "{d}/model", "--data", "{d}/none.jsonl", "--out-samples", "{d}/s.jsonl", "--out-summary", "{d}/s.json", "--settings", SETTINGS], "--data {d}/none.jsonl"),
    "aggregate missing exp dir": (["aggregate", "--exp-dir", "{d}/noexp", "--out-dir", "{d}/tables"], "--exp-dir {d}/noexp"),
    "plots missing rounds": (["plots", "--rounds", "{d}/none.csv", "--evals", "{d}/table.csv", "--comparison", "{d}/table.csv", "--intervals", "{d}/table.csv", "--paired", "{d}/table.csv", "--localization-table", "{d}/table.csv", "--quote-offsets-table", "{d}/table.csv", "--out-dir", "{d}/plots", "--out-page", "{d}/page.html"], "--rounds {d}/none.csv"),
    "track missing exp dir": (["track", "--exp-dir", "{d}/noexp", "--config", "{}", "--out", "{d}/marker.json"], "--exp-dir {d}/noexp"),
    "settings not JSON": (["rollouts", "--model", "{d}/model", "--data", "{d}/rows.jsonl", "--out", "{d}/out.jsonl", "--settings", "{seed: 0}"], "--settings is not valid JSON: Expecting property name"),
    "settings truncated": (["init-model", "--out", "{d}/theta0", "--settings", '{"seed": 0'], "--settings is not valid JSON"),
    "settings a list": (["init-model", "--out", "{d}/theta0", "--settings", "[1, 2]"], "--settings must be a JSON object, not list"),
    "settings a string": (["prepare-data", "--name", "math", "--split", "train", "--out", "{d}/d.jsonl", "--settings", '"math"'], "--settings must be a JSON object, not str"),
    "track config not JSON": (["track", "--exp-dir", "{d}/exp", "--config", "{", "--out", "{d}/marker.json"], "--config is not valid JSON"),
    "malformed JSONL line": (["grade", "--rollouts", "{d}/bad.jsonl", "--out", "{d}/out.jsonl", "--settings", SETTINGS], "{d}/bad.jsonl:3: not a JSON line"),
    "unknown subcommand": (["frobnicate", "--out", "{d}/x"], "invalid choice: 'frobnicate'"),
    "missing required argument": (["grade", "--rollouts", "{d}/rows.jsonl", "--settings", SETTINGS], "rosd grade: error: the following arguments are required: --out"),
    "unknown option": (["aggregate", "--exp-dir", "{d}/exp", "--out-dir", "{d}/tables", "--colour", "red"], "unrecognized arguments: --colour red"),
    "no subcommand": ([], "the following arguments are required: command"),
    "log option without a value": (["--log"], "argument --log: expected one argument"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(case, files, capsys):
    argv, expected = CASES[case]
    d = str(files)
    line = _bad_input([a.replace("{d}", d) for a in argv], capsys, files)
    assert expected.replace("{d}", d) in line
    assert line.startswith("rosd")


@pytest.mark.parametrize("error_class", ["ConfigError", "DataError", "FileNotFoundError"])
def test_data_and_config_errors_from_a_stage_are_one_line(error_class, files, capsys, monkeypatch):
    from rosd.evaluation import datasets
    from rosd.jobs import config
    from rosd.stages import rollouts

    if error_class == "ConfigError":
        error = config.ConfigError("config error: a = 1: must be a string\nconfig error: b = 2: must be a string")
    elif error_class == "DataError":
        if not hasattr(datasets, "DataError"):  # defined by rosd.evaluation.datasets as a ValueError
            monkeypatch.setattr(datasets, "DataError", type("DataError", (ValueError,), {}), raising=False)
        error = datasets.DataError("data.datasets.math.path: no rows")
    else:
        error = FileNotFoundError(2, "No such file or directory", str(files / "tokenizer.json"))

    def fail(**_):
        raise error

    monkeypatch.setattr(rollouts, "run_grade", fail)
    line = _bad_input(["grade", "--rollouts", str(files / "rows.jsonl"), "--out", str(files / "o.jsonl"), "--settings", "{}"], capsys, files)
    if error_class == "ConfigError":  # several bad values: still one line
        assert line.endswith("config error: a = 1: must be a string; config error: b = 2: must be a string")
    elif error_class == "DataError":
        assert line == "rosd grade: error: data.datasets.math.path: no rows"
    else:
        assert line == f"rosd grade: error: {files / 'tokenizer.json'}: no such file or directory"


def test_a_bug_keeps_its_traceback(files, monkeypatch):
    """A plain ValueError (or any other exception) is a bug: it propagates, not one line."""
    from rosd.stages import rollouts

    def fail(**_):
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(rollouts, "run_grade", fail)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["grade", "--rollouts", str(files / "rows.jsonl"), "--out", str(files / "o.jsonl"), "--settings", "{}"])


# --- as a process ---


def _rosd(args, env=None):
    environ = {k: v for k, v in os.environ.items() if k != "ROSD_DEBUG"} | (env or {})
    return subprocess.run([*ROSD, *args], capture_output=True, text=True, env=environ, timeout=60)


@pytest.mark.pipeline
@pytest.mark.parametrize("case", ["grade missing rollouts", "settings not JSON", "malformed JSONL line", "unknown subcommand"])
def test_bad_input_as_a_process(case, files):
    argv, expected = CASES[case]
    d = str(files)
    before = _listing(files)
    result = _rosd([a.replace("{d}", d) for a in argv])
    assert result.returncode == 2, result.stderr
    assert expected.replace("{d}", d) in _one_line(result.stderr)
    assert result.stdout == "" and _listing(files) == before


@pytest.mark.pipeline
def test_rosd_debug_shows_the_traceback(files):
    result = _rosd(["grade", "--rollouts", str(files / "bad.jsonl"), "--out", str(files / "o.jsonl"), "--settings", "{}"], env={"ROSD_DEBUG": "1"})
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "CorruptOutputError" in result.stderr  # a file the pipeline writes
    assert result.stderr.splitlines()[-1].startswith(f"rosd grade: error: {files}/bad.jsonl:3: not a JSON line: Expecting value")


@pytest.mark.pipeline
def test_log_gets_stderr_and_the_reason_goes_to_both(files):
    log = files / "logs" / "grade.log"
    (log.parent).mkdir()
    log.write_text("earlier attempt\n")
    result = _rosd(["--log", str(log), "grade", "--rollouts", str(files / "none.jsonl"), "--out", str(files / "o.jsonl"), "--settings", "{}"])
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert line == f"rosd grade: error: --rollouts {files}/none.jsonl: no such file or directory"
    text = log.read_text()
    assert text.startswith("earlier attempt\n")  # appended
    assert text.splitlines()[-1] == line and "--- rosd grade (pid " in text
    assert not (files / "o.jsonl").exists()


@pytest.mark.pipeline
def test_log_gets_what_children_write_to_fd_2(files):
    log = files / "child.log"
    result = _rosd(["--log", str(log), "with-gpu", "--count", "0", "--", "sh", "-c", "echo from-a-child >&2; echo out"])
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "out\n"
    assert "from-a-child" in log.read_text()


@pytest.mark.pipeline
def test_log_argument_errors_and_stage_exit_messages_reach_both(files):
    log = files / "usage.log"
    result = _rosd(["--log", str(log), "grade", "--rollouts", str(files / "rows.jsonl")])
    assert result.returncode == 2
    assert "the following arguments are required" in _one_line(result.stderr) and "required" in log.read_text()
    log = files / "exit.log"
    result = _rosd(["--log", str(log), "with-gpu", "--count", "1", "--", "true"], env={"ROSD_GPUS": ""})
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert "set ROSD_GPUS" in line and line in log.read_text()


@pytest.mark.pipeline
def test_log_a_bug_traceback_in_the_log_one_line_on_stderr(files):
    log = files / "bug.log"
    code = "import sys, rosd.cli as c\ndef bug(*args): raise ZeroDivisionError('boom')\nc._check_inputs = bug\nc.main(sys.argv[1:])"
    result = subprocess.run(
        [sys.executable, "-c", code, "--log", str(log), "grade", "--rollouts", str(files / "rows.jsonl"), "--out", str(files / "o.jsonl"), "--settings", "{}"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert _one_line(result.stderr) == f"rosd grade: failed: ZeroDivisionError: boom (traceback in {log})"
    assert "Traceback" in log.read_text() and "ZeroDivisionError: boom" in log.read_text()


# --- no orphans: a job stops when its Snakemake is gone ---


def test_snakemake_command_lines():
    assert lifeline.is_snakemake(["/env/bin/snakemake", "--cores", "2"])
    assert lifeline.is_snakemake(["/env/bin/python3.11", "/env/bin/snakemake", "--cores", "2"])
    assert lifeline.is_snakemake(["python", "-m", "snakemake", "--target-jobs", "x"])
    assert lifeline.is_snakemake(["python3", "-X", "utf8", "-m", "snakemake"])
    assert not lifeline.is_snakemake(["bash", "-c", "set -euo pipefail; snakemake --cores 1"])
    assert not lifeline.is_snakemake(["python", "-c", "import snakemake", "snakemake"])
    assert not lifeline.is_snakemake(["python", "-m", "pytest", "snakemake"])
    assert not lifeline.is_snakemake([])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the lifeline reads /proc")
def test_no_lifeline_outside_snakemake():
    if lifeline.find_snakemake() is not None:
        pytest.skip("the tests themselves run under Snakemake")
    assert lifeline.start("rosd test") is None


# A stand-in for Snakemake: named `snakemake`, it runs a job the way Snakemake does (bash -c, the
# job in Snakemake's process group) and sleeps; the test SIGKILLs it.
FAKE_SNAKEMAKE = """\
import subprocess, sys, time
job = subprocess.Popen(["bash", "-c", "set -euo pipefail; " + sys.argv[1] + "; echo finished >&2"])
print(job.pid, flush=True)
time.sleep(120)
"""

# A job that writes its output with rosd.io.files and runs a child; it reports its partial and waits.
WRITER = """\
import subprocess, sys, time
from pathlib import Path
from rosd.io import lifeline
from rosd.io.files import atomic_path
poll = float(sys.argv[3])
assert lifeline.start("rosd writer", poll=poll) is not None
child = subprocess.Popen(["sleep", "120"])
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half")
    Path(sys.argv[2]).write_text(f"{child.pid}")
    while not Path(sys.argv[2] + ".go").exists():
        time.sleep(0.05)
    tmp.write_text("whole")
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if entry.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (OSError, ValueError, IndexError):
            pass
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _start_job(tmp_path, command: str):
    """(fake snakemake, its bash pid, the job's pid, the stderr file)."""
    script = tmp_path / "snakemake"
    script.write_text(FAKE_SNAKEMAKE)
    stderr = open(tmp_path / "job.stderr", "w")
    snakemake = subprocess.Popen([sys.executable, str(script), command], stdout=subprocess.PIPE, stderr=stderr, text=True)
    bash = int(snakemake.stdout.readline())
    _wait_until(lambda: _children(bash), 20, "the job did not start")
    return snakemake, bash, _children(bash)[0], tmp_path / "job.stderr"


@contextlib.contextmanager
def _job(tmp_path, command: str):
    """`_start_job`, and whatever of the job and its bash the test left alive killed afterwards."""
    snakemake, bash, job, stderr = _start_job(tmp_path, command)
    try:
        yield snakemake, bash, job, stderr
    finally:
        for pid in (job, bash):
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the lifeline reads /proc")


@linux_only
@pytest.mark.pipeline
def test_job_dies_with_its_snakemake_and_writes_nothing(tmp_path):
    out, ready = tmp_path / "out.txt", tmp_path / "ready"
    with _job(tmp_path, f"{sys.executable} -c '{WRITER}' {out} {ready} 0.2") as (snakemake, bash, job, stderr):
        _wait_until(ready.exists, 20, "the job did not start writing")
        grandchild = int(ready.read_text())
        assert [p.name for p in tmp_path.glob(".out.txt.*.partial")]
        snakemake.kill()
        snakemake.wait()
        _wait_until(lambda: not _running(job), 5, "the job outlived its snakemake")
        _wait_until(lambda: not _running(grandchild), 2, "the job's child outlived it")
        (tmp_path / "ready.go").write_text("")  # would let the job finish, were it alive
        _wait_until(lambda: not _running(bash), 5, "the job's bash outlived it")
        assert not out.exists() and not list(tmp_path.glob(".out.txt.*.partial"))
        assert "rosd writer: stopping: the snakemake that started this job" in stderr.read_text()
        assert "finished" not in stderr.read_text()  # the job failed: bash -e stopped there


@linux_only
@pytest.mark.pipeline
def test_job_checks_its_snakemake_before_the_rename(tmp_path):
    """With the poll too slow to notice, the check before the atomic rename stops the job."""
    out, ready = tmp_path / "out.txt", tmp_path / "ready"
    with _job(tmp_path, f"{sys.executable} -c '{WRITER}' {out} {ready} 3600") as (snakemake, bash, job, stderr):
        _wait_until(ready.exists, 20, "the job did not start writing")
        snakemake.kill()
        snakemake.wait()
        time.sleep(0.3)
        assert _running(job)  # not noticed yet
        (tmp_path / "ready.go").write_text("")  # the job finishes its block and reaches the rename
        _wait_until(lambda: not _running(job), 5, "the job published after its snakemake died")
        assert not out.exists() and not list(tmp_path.glob(".out.txt.*.partial"))
        assert "stopping: the snakemake that started this job" in stderr.read_text()


@linux_only
@pytest.mark.pipeline
def test_rosd_command_waiting_for_a_gpu_dies_with_its_snakemake(tmp_path):
    """The real `rosd` command (waiting in `with-gpu` for a busy device) stops within seconds."""
    pool, out = tmp_path / "pool", tmp_path / "out.txt"
    pool.mkdir()
    slot = os.open(pool / "gpu-0.lock", os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(slot, fcntl.LOCK_EX)  # the one device is busy
    command = f"ROSD_GPUS=0 ROSD_GPU_POOL={pool} {sys.executable} -m rosd.cli --log {tmp_path}/job.log with-gpu --count 1 -- touch {out}"
    with _job(tmp_path, command) as (snakemake, bash, job, stderr):
        _wait_until(lambda: "waiting for 1 free GPU" in (tmp_path / "job.log").read_text() if (tmp_path / "job.log").exists() else False, 20, "rosd did not start waiting")
        snakemake.kill()
        snakemake.wait()
        _wait_until(lambda: not _running(job), 5, "rosd outlived its snakemake")
        os.close(slot)  # the device is free now: an orphan would run its command
        time.sleep(0.3)
        assert not out.exists()
        line = _one_line(stderr.read_text())  # the terminal gets the reason, once
        assert line.startswith("rosd with-gpu: stopping: the snakemake that started this job (pid")
        assert line in (tmp_path / "job.log").read_text()


@linux_only
@pytest.mark.pipeline
def test_job_dies_with_its_shell(tmp_path):
    """PR_SET_PDEATHSIG: the job's bash killed (its snakemake alive), the job gets SIGTERM."""
    out, ready = tmp_path / "out.txt", tmp_path / "ready"
    snakemake, bash, job, _ = _start_job(tmp_path, f"{sys.executable} -c '{WRITER}' {out} {ready} 3600")
    try:
        _wait_until(ready.exists, 20, "the job did not start writing")
        os.kill(bash, signal.SIGKILL)
        _wait_until(lambda: not _running(job), 5, "the job outlived its shell")
        assert not out.exists()
    finally:
        snakemake.kill()
        snakemake.wait()
        for pid in (job, int(ready.read_text() or 0) if ready.exists() else 0):
            if pid and _running(pid):
                os.kill(pid, signal.SIGKILL)


@linux_only
@pytest.mark.pipeline
def test_a_job_that_starts_after_its_snakemake_died_writes_nothing(files):
    """A job started just before Snakemake was killed is re-parented before its lifeline looks at its
    ancestry; the Snakefile's ROSD_SNAKEMAKE (pid and start time) still names its Snakemake."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    out = files / "graded-after-death.jsonl"
    result = _rosd(["grade", "--rollouts", str(files / "rows.jsonl"), "--out", str(out), "--settings", "{}"],
                   env={"ROSD_SNAKEMAKE": f"{gone.pid}:1"})
    assert result.returncode == 3
    assert _one_line(result.stderr).startswith(f"rosd grade: stopping: the snakemake that started this job (pid {gone.pid}) is gone")
    assert not out.exists()


TOOL_GOLD = json.dumps([{"Action": "search", "Action_Input": json.dumps({"q": "x"})}])
# (adapter, file name, its text, what the line must say): data rows the pipeline must refuse.
BAD_DATA = {
    "malformed JSONL line": ("tooluse", "test.jsonl", '{"prompt": "P", "answer": "[]"}\n{"prompt": "P",\n', "test.jsonl:2: not valid JSON"),
    "row without an answer": ("math500", "test.jsonl", '{"problem": "P", "answer": "1"}\n{"problem": "Q"}\n', "test.jsonl:2: no 'answer'"),
    "row without a prompt": ("tooluse", "test.jsonl", json.dumps({"answer": TOOL_GOLD}) + "\n", "test.jsonl:1: no 'prompt'"),
    "MATH-500 null answer": ("math500", "test.jsonl", '{"problem": "Q", "answer": null}\n', "test.jsonl:1: no 'answer'"),
    "JSON file holding an object": ("aime", "test.json", '{"problem": ["P"], "answer": ["1"]}', "one JSON object"),
    "AIME row without answer or box": ("aime", "test.jsonl", '{"problem": "P", "solution": "it is 7"}\n', "neither an 'answer' nor a \\boxed{} answer"),
    "tool-use gold not JSON": ("tooluse", "test.jsonl", json.dumps({"prompt": "P", "answer": "search(q=x)"}) + "\n", "'answer' is not valid JSON"),
    "GSM8K answer without its number": ("gsm8k", "test.jsonl", json.dumps({"question": "Q", "answer": "24"}) + "\n", "'#### N'"),
}


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data_rows_stop_prepare_data_with_one_line(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    adapter, name, text, expected = BAD_DATA[case]
    data = tmp_path / "data"
    data.mkdir()
    (data / name).write_text(text)
    settings = {"source": "world", "train_size": 4, "test_size": 4, "seed": 0, "datasets": {"bench": {"adapter": adapter, "path": str(data / name)}}}
    out = tmp_path / "out" / "bench.jsonl"
    line = _bad_input(["prepare-data", "--name", "bench", "--split", "test", "--out", str(out), "--settings", json.dumps(settings)], capsys, data)
    assert line.startswith("rosd prepare-data: error: ") and expected in line, line
    assert not out.exists()
