"""Data preparation and θ0: the first two stages."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rosd.evaluation.datasets import repeated_id
from rosd.io.files import InputFormatError, jsonl_line, read_jsonl, write_jsonl
from rosd.world import THETA0_DIR

log = logging.getLogger(__name__)

SHIPPED_THETA0 = Path(THETA0_DIR)
# What the stages read of a task record (rosd/world/tasks.py and rosd/evaluation/datasets.py write it).
TASK_KEYS = ("id", "kind", "prompt", "answer")


def row_error(path, position: int, problem: str, error: type[InputFormatError] = InputFormatError) -> InputFormatError:
    """``problem`` as one line naming ``path`` and the line of its row ``position`` (from 0);
    ``error`` CorruptOutputError for a file a stage wrote (the line then says how to rewrite it)."""
    return error(path, jsonl_line(path, position), problem)


def read_tasks(path: str) -> list[dict]:
    """The task records of a prepared data file; a row that is not a task, or whose id repeats an
    earlier row's (a benchmark's samples and scores are kept per id), is refused with its line."""
    tasks = read_jsonl(path)
    for position, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise row_error(path, position, f"not a task object but {type(task).__name__} {json.dumps(task)[:60]}")
        if missing := [key for key in TASK_KEYS if key not in task]:
            raise row_error(path, position, f"a task without {', '.join(missing)} (a task needs {', '.join(TASK_KEYS)})")
    if (repeat := repeated_id(tasks)) is not None:
        first, second = repeat
        raise row_error(path, second, f"id {tasks[second]['id']!r} repeats line {jsonl_line(path, first)}'s: every problem "
                                      "needs its own id (samples and scores are kept per id)")
    return tasks


def check_prompt_positions(model: str, tasks: list[dict], prompts: list[list[int]], max_new_tokens: int, *,
                           data: str, rows: list[dict], setting: str) -> None:
    """Refuse, before generation allocates for it, a prompt (token ids of ``tasks[i]``, a row of
    ``rows`` read from ``data``) that with ``max_new_tokens`` new tokens would pass the model's
    ``max_position_embeddings``: one line naming the data file's line and the setting to change."""
    from rosd.models.loading import max_positions

    limit = max_positions(model)
    if limit is None:
        return
    for task, prompt in zip(tasks, prompts):
        if len(prompt) + max_new_tokens > limit:
            position = next(i for i, row in enumerate(rows) if row is task)
            raise row_error(data, position, f"its prompt is {len(prompt)} tokens, and {setting}={max_new_tokens} more pass "
                                            f"the model's max_position_embeddings={limit} ({model}/config.json): shorten "
                                            "the prompt, or drop such prompts with data.max_prompt_tokens")


def max_prompt_tokens(settings: dict) -> int | None:
    """``data.max_prompt_tokens`` of a stage's settings; absent or null: no filter."""
    return (settings.get("data") or {}).get("max_prompt_tokens")


def drop_overlong_prompts(tokenizer, tasks: list[dict], settings: dict, *, what: str) -> tuple[list[dict], int]:
    """The tasks whose student prompt, chat-templated as it is sampled, has at most
    ``data.max_prompt_tokens`` tokens, and how many were dropped (ref: ``data.filter_overlong_prompts``
    with ``max_prompt_length``). With no limit the tasks come back untouched and nothing is tokenized.
    The one filter of train prompts (rollouts stage) and evaluation tasks (evaluate stage)."""
    limit = max_prompt_tokens(settings)
    if limit is None:
        return tasks, 0
    from rosd.method.prompts import chat_prompt_ids, student_messages

    thinking = settings.get("enable_thinking", False)
    kept = [t for t in tasks if len(chat_prompt_ids(tokenizer, student_messages(t), thinking)) <= limit]
    dropped = len(tasks) - len(kept)
    log.info("%s: %d of %d prompts longer than data.max_prompt_tokens=%d tokens dropped", what, dropped, len(tasks), limit)
    return kept, dropped


def prepare_data(*, name: str, split: str, settings: dict, out: str) -> None:
    """Write the tasks of one benchmark (split "test") or train target (split "train"): a real
    dataset when ``name`` is in ``data.datasets``, else the embedded world's generator."""
    if name in settings.get("datasets", {}):
        from rosd.evaluation.datasets import load_benchmark

        tasks = load_benchmark(name, settings["datasets"][name], split, settings)
    else:
        from rosd.world.tasks import generate

        size = settings["train_size"] if split == "train" else settings["test_size"]
        tasks = generate(name, split, size, settings["seed"])
    write_jsonl(out, tasks)
    log.info("wrote %d %s tasks of %s to %s", len(tasks), split, name, out)


def init_model(*, settings: dict, out: str) -> None:
    """Place θ0 at ``out``: links to the shipped embedded-world model, a fresh warm start, or
    (``path``) a local directory, hub name or packaged GGUF (rosd/models/sources.py)."""
    init = settings["init"]
    if init == "warm_start":
        from rosd.world.warm_start import run_warm_start

        run_warm_start(out, **settings.get("warm_start", {}))
        return
    if init == "path":
        from rosd.models.sources import place_model

        place_model(settings, out)
        return
    if not (SHIPPED_THETA0 / "config.json").exists():
        raise SystemExit(f"model.init={init!r}: no Hugging Face model directory at {SHIPPED_THETA0}")
    from rosd.models.sources import link_model

    link_model(SHIPPED_THETA0, out)
