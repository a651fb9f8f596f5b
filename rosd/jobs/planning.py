"""Training budgets at plan time (docs/method.md, "Update"): how many rounds a run on a target gets.

The reference trains a fixed number of epochs over the target's train split (10; 5 for tool use),
one optimizer step per batch of 32 prompts: ⌊train rows / 32⌋ steps per epoch, so biology gets
140 steps, chemistry 590, material 260, physics 220. `rounds` in the config is one number, a
number per target, or ``{epochs: E}`` per target, counted here from a local train file before any
job runs (a hub dataset cannot be counted offline: give its number of rounds instead).
Also which rounds one job runs together when `execution.rounds_per_job` > 1 (`round_blocks`).
"""

from __future__ import annotations

import json
from pathlib import Path

from rosd.jobs.config import ConfigError


def planned_steps(train_rows: int, batch_prompts: int, epochs: int) -> int:
    """Optimizer steps of ``epochs`` passes over ``train_rows`` prompts in batches of
    ``batch_prompts``, dropping the last incomplete batch of each epoch (ref)."""
    return (train_rows // batch_prompts) * epochs


def rounds_for(steps: int, steps_per_round: int) -> int:
    """Rounds that hold ``steps`` optimizer steps (the last round may hold fewer: never less than 1)."""
    return max(1, -(-steps // steps_per_round))


def _rows_in(path: Path) -> int:
    if path.suffix == ".parquet":
        import pyarrow.parquet

        return pyarrow.parquet.ParquetFile(path).metadata.num_rows
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return len(json.loads(text))
    return sum(1 for line in text.splitlines() if line.strip())


def local_train_rows(path: str | Path, split: str = "train") -> int:
    """Rows of a local train split: the file itself, or ``<split>.jsonl|.json|.parquet`` in a directory."""
    from rosd.evaluation.datasets import (
        split_file,  # the prepare_data stage's reading of a directory
    )

    path = Path(path)
    if path.is_dir():
        found = split_file(path, split)
        if found is None:
            raise FileNotFoundError(f"no {split}.jsonl, {split}.json or {split}.parquet in {path}")
        path = found
    return _rows_in(path)


# "1" in a block's environment: it holds its models in memory (`execution.resident`, rosd/jobs/blocks.py;
# set by workflow/rules/execution.smk). Not a setting of the job: it changes no byte of a result, so
# changing it reruns no stage (only the MLflow ingest, which records the whole config).
RESIDENT_ENV = "ROSD_RESIDENT"


def round_blocks(rounds: int, evaluated: list[int], rounds_per_job: int) -> list[tuple[int, int]]:
    """The (first, last) rounds of each job that runs rounds in a row (`execution.rounds_per_job`,
    rosd/jobs/blocks.py): consecutive blocks covering rounds 1..``rounds``, none longer than
    ``rounds_per_job``, one ending at every evaluated round (an evaluation job reads its checkpoint)."""
    blocks, first = [], 1
    ends = set(evaluated) | {rounds}
    for last in range(1, rounds + 1):
        if last in ends or last - first + 1 == rounds_per_job:
            blocks.append((first, last))
            first = last + 1
    return blocks


def train_rows(config: dict, target: str) -> int:
    """Rows of a target's train split, known before any job: the world's train_size, or a local file."""
    spec = config["data"]["datasets"].get(target)
    if spec is None:
        return config["data"]["train_size"]
    if not spec.get("path"):
        raise ConfigError(
            f"config error: rounds.{target} = {{epochs: ...}} needs data.datasets.{target}.path to count its rows; give its number of rounds instead"
        )
    try:
        return local_train_rows(spec["path"], spec.get("train_split", "train"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"config error: rounds.{target}: cannot count the train split: {error}") from None


def rounds_of(config: dict, target: str) -> int:
    """The number of rounds of a run on ``target``: one for all, the target's own, or its epochs."""
    rounds, train = config["rounds"], config["train"]
    if isinstance(rounds, int):
        return rounds
    if target not in rounds:
        raise ConfigError(f"config error: rounds has no entry for target {target!r}: give every target its rounds, or one number")
    if isinstance(rounds[target], int):
        return rounds[target]
    steps = planned_steps(train_rows(config, target), train["batch_prompts"], rounds[target]["epochs"])
    return rounds_for(steps, train["steps_per_round"])
