"""Rollouts and grading for one round (docs/method.md, "Rollouts")."""

from __future__ import annotations

import json
import logging
import random
from collections import Counter

from rosd.evaluation.grading import grade_batch
from rosd.io.files import CorruptOutputError, jsonl_line, read_output, write_jsonl
from rosd.method.prompts import chat_prompt_ids, student_messages
from rosd.stages import resident
from rosd.stages.data import (
    TASK_KEYS,
    check_prompt_positions,
    drop_overlong_prompts,
    max_prompt_tokens,
    read_tasks,
    row_error,
)

log = logging.getLogger(__name__)


def round_prompts(tasks: list[dict], *, seed: int, round_index: int, per_round: int) -> list[dict]:
    """The prompts of round ``round_index`` (1-based): consecutive slices of seeded epoch shuffles,
    so a run walks through the whole train split before repeating a prompt."""
    start = (round_index - 1) * per_round
    picked = []
    for position in range(start, start + per_round):
        epoch, offset = divmod(position, len(tasks))
        order = list(range(len(tasks)))
        random.Random(f"{seed}-{epoch}").shuffle(order)
        picked.append(tasks[order[offset]])
    return picked


def run_rollouts(*, model: str, data: str, out: str, settings: dict) -> None:
    """Sample ``rollouts_per_prompt`` responses per prompt from the round's starting checkpoint.
    Under ``data.max_prompt_tokens`` the train split first loses its too-long prompts (ref), and every
    row records how many (``train_prompts_dropped``, for the round's metrics)."""
    train = settings["train"]
    per_step = train["batch_prompts"]
    train_tasks = read_tasks(data)
    engine = resident.engine(model, settings)
    split, dropped = drop_overlong_prompts(engine.tokenizer, train_tasks, settings, what=f"train split {data}")
    if not split:
        raise SystemExit(f"{data}: every train prompt is longer than data.max_prompt_tokens={max_prompt_tokens(settings)}")
    tasks = round_prompts(split, seed=settings["seed"], round_index=settings["round"], per_round=per_step * train["steps_per_round"])
    prompts = [chat_prompt_ids(engine.tokenizer, student_messages(t), settings["enable_thinking"]) for t in tasks]
    check_prompt_positions(model, tasks, prompts, train["max_new_tokens"], data=data, rows=train_tasks, setting="train.max_new_tokens")
    samples = engine.generate(
        prompts,
        n=train["rollouts_per_prompt"],
        temperature=train["temperature"],
        top_p=train["top_p"],
        top_k=train["top_k"],
        max_new_tokens=train["max_new_tokens"],
        seed=settings["seed"] * 100_003 + settings["round"],
    )
    rows = []
    for group, (task, prompt, group_samples) in enumerate(zip(tasks, prompts, samples)):
        for j, sample in enumerate(group_samples):
            rows.append(
                {
                    "step": group // per_step,
                    "group": group,
                    "sample": j,
                    "task": task,
                    "prompt_ids": prompt,
                    "response_ids": sample.ids,
                    "response": sample.text,
                    "sampler_logps": sample.logps,
                }
            )
            if max_prompt_tokens(settings) is not None:
                rows[-1]["train_prompts_dropped"] = dropped
    write_jsonl(out, rows)
    log.info("wrote %d rollouts of %d prompts to %s", len(rows), len(tasks), out)


# What the round's later stages read of a rollout row (run_rollouts writes them).
ROLLOUT_KEYS = ("group", "sample", "task", "prompt_ids", "response_ids", "response")


def check_rollout_rows(path: str, rows: list[dict], *, group_size: int, keys: tuple[str, ...] = ROLLOUT_KEYS) -> None:
    """Refuse, as one line naming ``path`` (and the line), a rollouts or graded file that is not what
    the pipeline wrote: a row without ``keys`` or a task, a repeated (group, sample), or groups that
    are not numbered 0, 1, ... with ``group_size`` rows each.
    A group short of a row would otherwise be trained on in silence."""

    def corrupt(position: int | None, problem: str) -> CorruptOutputError:
        return CorruptOutputError(path, None, problem) if position is None else row_error(path, position, problem, CorruptOutputError)

    rows_at: dict[tuple[int, int], int] = {}
    for position, row in enumerate(rows):
        if not isinstance(row, dict) or any(key not in row for key in keys):
            raise corrupt(position, f"not a rollout row (it needs {', '.join(keys)})")
        if not isinstance(row["task"], dict) or any(key not in row["task"] for key in TASK_KEYS):
            raise corrupt(position, f"its task is not a task record (it needs {', '.join(TASK_KEYS)})")
        for key in ("group", "sample"):
            if type(row[key]) is not int or row[key] < 0:
                raise corrupt(position, f"{key} {json.dumps(row[key])[:40]} is not a count (0, 1, ...)")
        if (row["group"], row["sample"]) in rows_at:
            first = jsonl_line(path, rows_at[row["group"], row["sample"]])
            raise corrupt(position, f"group {row['group']} sample {row['sample']} repeats line {first}")
        rows_at[row["group"], row["sample"]] = position
    sizes = Counter(group for group, _ in rows_at)
    for group in range(max(sizes, default=-1) + 1):
        if sizes[group] != group_size:
            first = min((position for (g, _), position in rows_at.items() if g == group), default=None)
            raise corrupt(first, f"group {group} has {sizes[group]} rollouts, not {group_size} (train.rollouts_per_prompt)")


def run_grade(*, rollouts: str, out: str, settings: dict) -> None:
    """Reward 1.0 or 0.0 per rollout from the task's verifier, read as ``grading.mode`` says."""
    rows = read_output(rollouts)
    check_rollout_rows(rollouts, rows, group_size=settings["train"]["rollouts_per_prompt"])
    items = [(row["task"]["kind"], row["response"], row["task"]["answer"]) for row in rows]
    graded = grade_batch(items, mode=settings["grading"]["mode"])
    for row, reward in zip(rows, graded.scores):
        row["reward"] = reward
    write_jsonl(out, rows)
    accuracy = sum(r["reward"] for r in rows) / max(len(rows), 1)
    log.info("graded %d rollouts: accuracy %.3f; %d past the grading deadline (scored 0)", len(rows), accuracy, graded.timed_out)
