"""The `rosd` command: one subcommand per pipeline stage (what the Snakemake rules call), plus
`rosd compare` for people. Stage settings arrive as one JSON object (``--settings``).

Exit status: 0 done; 2 bad input (a missing input file, malformed ``--settings`` JSON, a malformed
input line, a truncated or corrupted output of an earlier job, a config or data error, a bad
argument) or a condition the user must clear (a full disk, a foreign or locked MLflow store),
reported as ONE line on stderr, no traceback (``ROSD_DEBUG=1`` adds it); 1 a bug (the traceback) or a stage's own one-line
``SystemExit`` message; 3 stopped because the Snakemake that started the job is gone
(rosd/io/lifeline.py).

``rosd --log FILE <stage> ...`` sends this process's stderr (file descriptor 2, so Python logging,
warnings and whatever libraries and child processes write there) to FILE, appended, and on a
failure also writes the one-line reason to the stderr it was started with (Snakemake's terminal).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
import traceback

from rosd.jobs.registry import DELEGATED, LOG_FORMAT, STAGES

# Nothing is ever fetched from a hub: models and data are local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BAD_INPUT, BUG = 2, 1
# Started by Snakemake's onstart (rosd/jobs/worker.py), not by people: the stage worker serves
# `rosd` commands in forks of this process.
STAGE_WORKER = "stage-worker"


class UsageError(Exception):
    """Bad input to the command itself (arguments, ``--settings``, a missing input path)."""

    def __init__(self, message: str, prog: str | None = None):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise UsageError(f"{message} (see {self.prog} --help)", prog=self.prog)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rosd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", metavar="FILE", help="append this process's stderr to FILE; a failure's one-line reason also goes to the original stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, stage in STAGES.items():
        command = sub.add_parser(name, help=f"pipeline stage {name}")
        for arg in stage.files:
            command.add_argument("--" + arg.replace("_", "-"), required=True)
        if stage.settings:
            command.add_argument("--settings", required=True, help="the stage's settings as a JSON object")
    track = sub.add_parser("track", help="ingest an experiment's metrics into its MLflow store")
    track.add_argument("--exp-dir", required=True)
    track.add_argument("--config", required=True, help="the run's config as JSON")
    track.add_argument("--out", required=True, help="marker file written after a successful ingest")
    compare = sub.add_parser("compare", help="print the comparison table from MLflow")
    compare.add_argument("--experiment", default="default")
    compare.add_argument("--results", default="results", help="the results directory")
    compare.add_argument("--method", action="append", help="only these methods (repeatable)")
    compare.add_argument("--target", action="append", help="only these train targets (repeatable)")
    compare.add_argument("--metric", default="mean_at_k", help="mean_at_k, maj_at_k, pass_at_<j>")
    compare.add_argument("--out", help="also write the table to OUT.csv (numbers) and OUT.md (as printed)")
    with_gpu = sub.add_parser("with-gpu", help="run COMMAND with its own GPU(s) from the local pool (ROSD_GPUS)")
    with_gpu.add_argument("--count", type=int, default=1, help="GPUs the command needs (0: run it as it is)")
    with_gpu.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    return parser


def _json_object(text: str, option: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{option} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{option} must be a JSON object, not {type(value).__name__}: {text[:60]}")
    return value


def _check_inputs(args, inputs) -> None:
    """The file arguments a command reads must exist (checked before it, and its imports, start)."""
    for name in inputs:
        path = getattr(args, name)
        if not os.path.exists(path):
            raise UsageError(f"--{name.replace('_', '-')} {path}: no such file or directory")


def _track(args) -> None:
    config = _json_object(args.config, "--config")
    _check_inputs(args, ["exp_dir"])
    from rosd.io.files import write_json
    from rosd.reporting.tracking import ingest

    written = ingest(args.exp_dir, os.path.basename(os.path.normpath(args.exp_dir)), config)
    write_json(args.out, {"parent_runs": written})


def _compare(args) -> None:
    from rosd.reporting.compare import interval_sections, write_compare_outputs
    from rosd.reporting.tracking import compare_table, format_markdown

    exp_dir = os.path.join(args.results, args.experiment)
    if not os.path.exists(os.path.join(exp_dir, "mlflow.db")):
        sys.exit(f"no MLflow store at {exp_dir}/mlflow.db: run the pipeline first (snakemake --cores all)")
    table = compare_table(exp_dir, args.experiment, methods=args.method, targets=args.target, metric=args.metric)
    if table.empty:  # an unknown metric or filters that match nothing: say so, not an empty table
        sys.exit(f"no runs in {exp_dir} with metric {args.metric!r} for methods {args.method or 'all'}, targets {args.target or 'all'}")
    markdown = format_markdown(table)
    print(markdown)
    if args.metric == "mean_at_k":
        print(interval_sections(exp_dir, args.method, args.target), end="")
    if args.out:
        write_compare_outputs(table, markdown, args.out)


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


class _Stderr:
    """Where the command's failure lines go: stderr (file descriptor 2) and, after `redirect`
    (``--log``), also the stderr the process was started with."""

    def __init__(self):
        self.original: int | None = None
        self.log: str | None = None

    def redirect(self, path: str, prog: str) -> None:
        """Point fd 2 at ``path``, appended. Appended, not truncated: Snakemake removes a job's log
        before the job starts, and several processes may share one log (accelerate's or
        torchrun's ranks, ``rosd with-gpu`` and its command): truncating would wipe what another
        one (a failure's reason included) already wrote."""
        try:
            if os.path.dirname(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        except OSError as error:
            raise UsageError(f"--log {path}: cannot open: {error.strerror}", prog=prog) from None
        sys.stderr.flush()
        self.original = os.dup(2)
        os.dup2(fd, 2)
        os.close(fd)
        self.log = path
        os.write(2, f"--- {prog} (pid {os.getpid()}) started {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())

    def to_original(self, line: str) -> None:
        if self.original is not None:
            try:
                os.write(self.original, (line + "\n").encode())
            except OSError:
                pass

    def line(self, text: str) -> None:
        """One line to stderr (the log, with ``--log``) and to the original stderr."""
        line = _one_line(text)
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        self.to_original(line)

    def report(self, text: str) -> None:
        """`line` for any thread (the lifeline's): straight to the file descriptors, not through
        sys.stderr, whose lock the main thread may hold."""
        line = _one_line(text)
        try:
            os.write(2, (line + "\n").encode())
        except OSError:
            pass
        self.to_original(line)


def _user_error(error: BaseException) -> str | None:
    """The one-line reason when ``error`` is a known bad-input error, None when it is a bug."""
    if isinstance(error, UsageError):
        return str(error)
    if isinstance(error, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        reason = (error.strerror or type(error).__name__).lower()
        return f"{error.filename}: {reason}" if error.filename else str(error)
    # Errors that other modules raise for bad input, looked up only when their module is loaded
    # (it cannot have raised otherwise): no stage's imports are paid for an error message.
    known = [getattr(sys.modules.get(module), name, None) for module, name in USER_ERRORS]
    known = tuple(cls for cls in known if isinstance(cls, type) and issubclass(cls, BaseException))
    if known and isinstance(error, known):
        return str(error)
    return None


# (module, class) of the errors that mean bad input, not a bug. A plain ValueError or
# json.JSONDecodeError is not among them: the code raises those for its own mistakes too (a check
# worker's malformed answer, say); the readers of input files raise rosd.io.files.InputFormatError.
USER_ERRORS = [
    ("rosd.io.files", "InputFormatError"),  # CorruptOutputError too: a truncated output of a stage
    ("rosd.io.files", "DiskFullError"),
    ("rosd.reporting.tracking", "StoreError"),  # not an MLflow store, or one locked too long
    ("rosd.jobs.config", "ConfigError"),
    ("rosd.evaluation.datasets", "DataError"),
]


def _debug() -> bool:
    return os.environ.get("ROSD_DEBUG", "") not in ("", "0")


def _log_option(argv: list[str]) -> str | None:
    """The value of the global ``--log`` (before the subcommand), found before parsing so that
    even an argument error is logged."""
    for i, arg in enumerate(argv):
        if arg == "--log":
            return argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith("--log="):
            return arg.removeprefix("--log=")
        if not arg.startswith("-"):
            return None
    return None


def _prog(argv: list[str]) -> str:
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--log":
            skip = True
        elif not arg.startswith("-"):
            return f"rosd {arg}"
    return "rosd"


def _run(args) -> None:
    if args.command == "with-gpu":
        from rosd.jobs.gpu_pool import exec_with_gpus

        return exec_with_gpus(args.count, args.argv[1:] if args.argv[:1] == ["--"] else args.argv)
    if args.command == "track":
        return _track(args)
    if args.command == "compare":
        return _compare(args)
    stage = STAGES[args.command]
    kwargs = {name: getattr(args, name) for name in stage.files}
    if stage.settings:
        kwargs["settings"] = _json_object(args.settings, "--settings")
    _check_inputs(args, stage.inputs)
    stage.load()(**kwargs)


def main(argv: list[str] | None = None) -> None:
    """Run one command. Bad input: one line on stderr and SystemExit(2); a stage's own
    ``SystemExit(message)`` passes through (exit 1); a bug propagates (its traceback, exit 1)."""
    if argv is None and _prog(sys.argv[1:]).removeprefix("rosd ") in DELEGATED:
        from rosd.jobs import worker

        if (status := worker.delegate(sys.argv[1:])) is not None:
            raise SystemExit(status)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [STAGE_WORKER]:  # before the lifeline and logging: the worker forks, with no thread
        from rosd.jobs import worker

        return worker.serve(argv[1], run=main)
    err = _Stderr()
    prog = _prog(argv)
    try:
        if (log := _log_option(argv)) is not None:
            err.redirect(log, prog)
        args = _parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
        from rosd.io import lifeline

        lifeline.start(prog, report=err.report)
        _run(args)
        # Done (every output is in place): keep the collector out of the interpreter's teardown, which
        # otherwise walks torch's and transformers' objects for ~1 s (benchmarks/round_cost.py).
        gc.freeze()
    except SystemExit as exit_:
        if err.original is not None and isinstance(exit_.code, str):
            err.line(f"{prog}: {exit_.code}")
            raise SystemExit(BUG) from None
        raise
    except Exception as error:
        reason = _user_error(error)
        if reason is None:  # a bug: its traceback
            if err.original is None:
                raise
            traceback.print_exc()
            sys.stderr.flush()
            err.to_original(_one_line(f"{prog}: failed: {type(error).__name__}: {error} (traceback in {err.log})"))
            raise SystemExit(BUG) from None
        if _debug():
            traceback.print_exc()
        err.line(f"{getattr(error, 'prog', None) or prog}: error: {reason}")
        raise SystemExit(BAD_INPUT) from None


if __name__ == "__main__":
    main()
