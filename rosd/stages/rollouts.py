"""Rollouts and grading for one round (docs/method.md, "Rollouts")."""

from __future__ import annotations

import logging
import random

from rosd.engines import load_engine
from rosd.evaluation.grading import grade_batch
from rosd.io.files import read_jsonl, write_jsonl
from rosd.method.prompts import chat_prompt_ids, student_messages
from rosd.stages.data import drop_overlong_prompts, max_prompt_tokens

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
    train, gen = settings["train"], settings["generation"]
    per_step = train["batch_prompts"]
    engine = load_engine(
        gen["backend"], model, device=settings["device"], dtype=settings["dtype"], batch_size=gen["batch_size"],
        tensor_parallel_size=gen["tensor_parallel_size"],
    )
    split, dropped = drop_overlong_prompts(engine.tokenizer, read_jsonl(data), settings, what=f"train split {data}")
    if not split:
        raise SystemExit(f"{data}: every train prompt is longer than data.max_prompt_tokens={max_prompt_tokens(settings)}")
    tasks = round_prompts(split, seed=settings["seed"], round_index=settings["round"], per_round=per_step * train["steps_per_round"])
    prompts = [chat_prompt_ids(engine.tokenizer, student_messages(t), settings["enable_thinking"]) for t in tasks]
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


def run_grade(*, rollouts: str, out: str, settings: dict) -> None:
    """Reward 1.0 or 0.0 per rollout from the task's verifier, read as ``grading.mode`` says."""
    rows = read_jsonl(rollouts)
    items = [(row["task"]["kind"], row["response"], row["task"]["answer"]) for row in rows]
    graded = grade_batch(items, mode=settings["grading"]["mode"])
    for row, reward in zip(rows, graded.scores):
        row["reward"] = reward
    write_jsonl(out, rows)
    accuracy = sum(r["reward"] for r in rows) / max(len(rows), 1)
    log.info("graded %d rollouts: accuracy %.3f; %d past the grading deadline (scored 0)", len(rows), accuracy, graded.timed_out)
