"""Evaluation (docs/method.md, "Evaluation"): k samples per test problem, every sample's correctness kept on disk. One
job evaluates a checkpoint on one benchmark (`run_evaluate`) or, with `execution.evaluation_jobs:
checkpoint`, on every benchmark with the model loaded once (`run_evaluate_checkpoint`): the same
samples either way, since each benchmark's generation is seeded on its own."""

from __future__ import annotations

import logging
import os

from rosd.engines import load_engine
from rosd.evaluation.grading import extract_answer, grade_batch
from rosd.evaluation.metrics import summarize
from rosd.io.files import write_json, write_jsonl
from rosd.method.prompts import chat_prompt_ids, student_messages
from rosd.stages.data import (
    check_prompt_positions,
    drop_overlong_prompts,
    max_prompt_tokens,
    read_tasks,
)

log = logging.getLogger(__name__)


def _engine(model: str, settings: dict):
    gen = settings["generation"]
    return load_engine(
        gen["backend"], model, device=settings["device"], dtype=settings["dtype"], batch_size=gen["batch_size"],
        tensor_parallel_size=gen["tensor_parallel_size"],
    )


def run_evaluate(*, model: str, data: str, out_samples: str, out_summary: str, settings: dict) -> None:
    rows = read_tasks(data)
    _evaluate(_engine(model, settings), model, data, rows, out_samples, out_summary, settings)


def run_evaluate_checkpoint(*, model: str, data_dir: str, out_dir: str, settings: dict) -> None:
    """Every benchmark of ``settings["benchmarks"]``: ``data_dir/<b>.jsonl`` into
    ``out_dir/<b>.jsonl`` and ``<b>.json``, each with the settings its own job would get."""
    data = {benchmark: os.path.join(data_dir, f"{benchmark}.jsonl") for benchmark in settings["benchmarks"]}
    rows = {benchmark: read_tasks(path) for benchmark, path in data.items()}  # every file checked before the model loads
    engine = _engine(model, settings)
    shared = {k: v for k, v in settings.items() if k != "benchmarks"}
    for benchmark in settings["benchmarks"]:
        out = os.path.join(out_dir, benchmark)
        _evaluate(engine, model, data[benchmark], rows[benchmark], f"{out}.jsonl", f"{out}.json", {**shared, "benchmark": benchmark})


def _evaluate(engine, model: str, data: str, rows: list[dict], out_samples: str, out_summary: str, settings: dict) -> None:
    """Evaluate on ``rows``, the tasks of ``data`` (rosd.stages.data.read_tasks)."""
    # Under data.max_prompt_tokens, tasks whose prompt is too long are not evaluated (ref).
    tasks, dropped = drop_overlong_prompts(engine.tokenizer, rows, settings, what=f"benchmark {data}")
    ev = settings["evaluation"]
    prompts = [chat_prompt_ids(engine.tokenizer, student_messages(t), settings["enable_thinking"]) for t in tasks]
    check_prompt_positions(model, tasks, prompts, ev["max_new_tokens"], data=data, rows=rows, setting="evaluation.max_new_tokens")
    samples = engine.generate(
        prompts, n=ev["samples"], temperature=ev["temperature"], top_p=ev["top_p"],
        max_new_tokens=ev["max_new_tokens"], seed=settings["seed"],
    )
    graded = [(task, j, s) for task, group in zip(tasks, samples) for j, s in enumerate(group)]
    # One batch, so the math-verify checks the exact comparison leaves spread over its worker pool.
    mode = settings["grading"]["mode"]
    grades = grade_batch([(task["kind"], s.text, task["answer"]) for task, _, s in graded], mode=mode)
    correct = grades.scores
    records = [
        {
            "id": task["id"],
            "sample": j,
            "correct": int(c),
            "extracted": extract_answer(task["kind"], s.text, mode=mode),
            "response": s.text,
        }
        for (task, j, s), c in zip(graded, correct)
    ]
    write_jsonl(out_samples, records)
    summary = summarize(records, ev["samples"])
    summary.update({key: settings[key] for key in ("method", "target", "seed", "round", "benchmark")})
    summary["in_domain"] = settings["benchmark"] == settings["target"]
    summary["grading_timed_out"] = grades.timed_out  # samples past the grading deadline, scored 0
    if max_prompt_tokens(settings) is not None:
        summary["prompts_dropped"] = dropped  # tasks left out as longer than data.max_prompt_tokens
    write_json(out_summary, summary)
    log.info("%s on %s: mean@%d = %.3f", model, settings["benchmark"], ev["samples"], summary["mean_at_k"])
