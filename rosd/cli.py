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
    "plots": ("rosd.plots", "write_plots", ["rounds", "evals", "comparison", "localization_table", "out_dir", "out_page"]),
}
NO_SETTINGS = {"grade", "aggregate", "plots"}


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
    compare.add_argument("--metric", default="mean_at_k", help="mean_at_k, maj_at_k, pass_at_<j>")
    compare.add_argument("--out", help="also write the table to OUT.csv (numbers) and OUT.md (as printed)")
    with_gpu = sub.add_parser("with-gpu", help="run COMMAND with its own GPU(s) from the local pool (ROSD_GPUS)")
    with_gpu.add_argument("--count", type=int, default=1, help="GPUs the command needs (0: run it as it is)")
    with_gpu.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
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
    if table.empty:  # an unknown metric or filters that match nothing: say so, not an empty table
        sys.exit(f"no runs in {exp_dir} with metric {args.metric!r} for methods {args.method or 'all'}, targets {args.target or 'all'}")
    markdown = format_markdown(table)
    print(markdown)
    if args.out:
        write_compare_outputs(table, markdown, args.out)


def write_compare_outputs(table, markdown: str, prefix: str) -> None:
    """OUT.csv with one "<benchmark (ID|OOD)> <mean|std|seeds>" column per statistic, OUT.md as printed."""
    from rosd.io import atomic_path

    flat = table.copy()
    flat.columns = [f"{label} {stat}" for label, stat in flat.columns]
    with atomic_path(prefix + ".csv") as tmp:
        flat.reset_index().to_csv(tmp, index=False)
    with atomic_path(prefix + ".md") as tmp:
        tmp.write_text(markdown, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.command == "with-gpu":
        from rosd.gpu_pool import exec_with_gpus

        return exec_with_gpus(args.count, args.argv[1:] if args.argv[:1] == ["--"] else args.argv)
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
