"""The `rosd` command: one subcommand per pipeline stage (what the Snakemake rules call), plus
`rosd compare` for people. Stage settings arrive as one JSON object (``--settings``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

# Nothing is ever fetched from a hub: models and data are local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STAGES = {
    # name: (module, function, file arguments)
    "prepare-data": ("rosd.stages.data", "prepare_data", ["name", "split", "out"]),
    "init-model": ("rosd.stages.data", "init_model", ["out"]),
    "rollouts": ("rosd.stages.rollouts", "run_rollouts", ["model", "data", "out"]),
    "grade": ("rosd.stages.rollouts", "run_grade", ["rollouts", "out"]),
    "reflect": ("rosd.stages.reflect", "run_reflect", ["model", "graded", "out"]),
    "teacher-score": ("rosd.stages.teacher", "run_teacher_score", ["teacher", "student", "reflections", "out"]),
    "distill": ("rosd.stages.distill", "run_distill", ["model", "reflections", "teacher_scores", "out_model", "out_metrics"]),
    "evaluate": ("rosd.stages.evaluate", "run_evaluate", ["model", "data", "out_samples", "out_summary"]),
    "aggregate": ("rosd.aggregate", "write_tables", ["exp_dir", "out_dir"]),
}
NO_SETTINGS = {"grade", "aggregate"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rosd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, _, files) in STAGES.items():
        stage = sub.add_parser(name, help=f"pipeline stage {name}")
        for arg in files:
            stage.add_argument("--" + arg.replace("_", "-"), required=True)
        if name not in NO_SETTINGS:
            stage.add_argument("--settings", required=True, help="the stage's settings as a JSON object")
    track = sub.add_parser("track", help="ingest an experiment's metrics into its MLflow store")
    track.add_argument("--exp-dir", required=True)
    track.add_argument("--config", required=True, help="the run's config as JSON")
    track.add_argument("--out", required=True, help="marker file written after a successful ingest")
    compare = sub.add_parser("compare", help="print the comparison table from MLflow")
    compare.add_argument("--experiment", default="default")
    compare.add_argument("--results", default="results", help="the results directory")
    compare.add_argument("--method", action="append", help="only these methods (repeatable)")
    compare.add_argument("--target", action="append", help="only these train targets (repeatable)")
    compare.add_argument("--metric", default="mean_at_k")
    return parser


def _track(args) -> None:
    from rosd.io import write_json
    from rosd.tracking import ingest

    written = ingest(args.exp_dir, os.path.basename(os.path.normpath(args.exp_dir)), json.loads(args.config))
    write_json(args.out, {"parent_runs": written})


def _compare(args) -> None:
    from rosd.tracking import compare_table, format_markdown

    exp_dir = os.path.join(args.results, args.experiment)
    if not os.path.exists(os.path.join(exp_dir, "mlflow.db")):
        sys.exit(f"no MLflow store at {exp_dir}/mlflow.db: run the pipeline first (snakemake --cores all)")
    table = compare_table(exp_dir, args.experiment, methods=args.method, targets=args.target, metric=args.metric)
    print(format_markdown(table))


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.command == "track":
        return _track(args)
    if args.command == "compare":
        return _compare(args)
    module_name, function_name, files = STAGES[args.command]
    import importlib

    function = getattr(importlib.import_module(module_name), function_name)
    kwargs = {name: getattr(args, name) for name in files}
    if args.command not in NO_SETTINGS:
        kwargs["settings"] = json.loads(args.settings)
    function(**kwargs)


if __name__ == "__main__":
    main()
