"""Real benchmarks as the pipeline's task records (SPEC §4).

Every adapter returns the record the embedded world produces (rosd/world/tasks.py)::

    {"id", "domain", "kind", "system", "prompt", "answer", "solution", "steps"}

with ``kind`` "mcq", "tooluse" or "math" (graded by rosd.grading), ``solution`` the dataset's
reference solution or None, and ``steps`` always [] (only the world knows a solution's steps).
``domain`` is the benchmark's name in the config, so every benchmark (each SciKnowEval domain
among them) stays its own, never pooled.

Rows come from a local JSONL/JSON/parquet file or directory (always possible), or from a public
dataset name through ``datasets.load_dataset`` (imported only then) when the hub is on.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

from rosd.grading import last_boxed
from rosd.hub import hub_offline, offline_message

# The usual instruction for boxed math answers (Qwen's), appended to the problem.
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# SciKnowEval as the reference prepares it: level-3 multiple choice (2 or 4 options), one domain,
# options as "A: ...", one system prompt for both option counts, and a 90/10 split with seed 42
# (numpy's permutation, as datasets' train_test_split draws it), which reproduces ../shared/data.
SCIKNOWEVAL_SYSTEM = (
    "\nGiven a question and four options, please select the right answer. Respond in the following format:\n"
    "<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n\n"
    "For the answer, only output the letter corresponding to the correct option (A, B, C, or D), and nothing else. "
    'Do not restate the answer text. For example, if the answer is "A", just output:\n<answer>\nA\n</answer>\n'
)
SCIKNOWEVAL_LEVEL = "L3"
SCIKNOWEVAL_TYPES = ("mcq-4-choices", "mcq-2-choices")
SCIKNOWEVAL_DOMAINS = ("biology", "chemistry", "material", "physics")
SCIKNOWEVAL_TEST_FRACTION = 0.1
SCIKNOWEVAL_SPLIT_SEED = 42
SCIKNOWEVAL_HUB_SPLIT = "test"  # the hub release is one split holding every question

_GSM8K_CALCULATOR = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations, e.g. <<48/2=24>>


def _record(name: str, key, kind: str, prompt: str, answer, *, system=None, solution=None) -> dict:
    return {
        "id": f"{name}-{key}",
        "domain": name,
        "kind": kind,
        "system": system,
        "prompt": prompt,
        "answer": answer,
        "solution": solution,
        "steps": [],
    }


# --- where rows come from ---

def _read_file(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet  # installed with mlflow; to_pylist gives plain Python values

        return pyarrow.parquet.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def local_rows(path: Path, split_name: str) -> list[dict]:
    """Rows of a file, or of ``<dir>/<split_name>.{jsonl,json,parquet}`` when ``path`` is a directory."""
    if path.is_dir():
        candidates = [path / f"{split_name}{suffix}" for suffix in (".jsonl", ".json", ".parquet")]
        found = [c for c in candidates if c.exists()]
        if not found:
            raise SystemExit(f"no {split_name}.jsonl, .json or .parquet in {path}")
        path = found[0]
    if not path.exists():
        raise SystemExit(f"no such data file or directory: {path}")
    return _read_file(path)


def hub_rows(name: str, hub: str, config: str | None, split_name: str) -> list[dict]:
    """Rows of a public dataset's split; one clear line, at once, when the hub is off."""
    if hub_offline():
        raise SystemExit(offline_message(f"data.datasets.{name}.hub", hub, f"give a local JSONL/parquet file in data.datasets.{name}.path"))
    try:
        import datasets
    except ImportError:
        raise SystemExit(f"data.datasets.{name}.hub needs the datasets package: pip install 'rosd[hub]'") from None
    return [dict(row) for row in datasets.load_dataset(hub, config, split=split_name)]


def _rows(name: str, spec: dict, split: str) -> list[dict]:
    """The rows of the pipeline's split ("train"/"test"), named by the entry's train_split/test_split."""
    split_name = spec.get(f"{split}_split", split)
    if spec.get("path"):
        return local_rows(Path(spec["path"]).expanduser(), split_name)
    if spec.get("hub"):
        return hub_rows(name, spec["hub"], spec.get("hub_config"), split_name)
    raise SystemExit(f"data.datasets.{name}: give a local 'path' or a public 'hub' dataset name")


# --- adapters: (name, entry, split "train"/"test", data settings) -> records ---

def _sciknoweval_prompt(row: dict) -> str:
    choices = row["choices"]
    options = "\n".join(f"{label}: {text}" for label, text in zip(choices["label"], choices["text"]))
    return row["question"] + "\n\n" + options + "\nPlease reason step by step."


def sciknoweval_split(n: int) -> tuple[list[int], list[int]]:
    """(train, test) row positions of the reference's 90/10 split of n rows."""
    import numpy

    order = numpy.random.default_rng(SCIKNOWEVAL_SPLIT_SEED).permutation(n).tolist()
    n_test = math.ceil(SCIKNOWEVAL_TEST_FRACTION * n)
    return order[n_test:], order[:n_test]


def _sciknoweval_prepared(name: str, rows: list[dict]) -> list[dict]:
    return [_record(name, row["idx"], "mcq", row["prompt"], row["answer"], system=row["system"]) for row in rows]


def _sciknoweval(name: str, spec: dict, split: str, settings: dict) -> list[dict]:
    """One SciKnowEval domain. A local directory holds the reference's prepared rows
    (``<path>/<domain>/<split>.jsonl``, as in ../shared/data), taken as they are; a local file or
    the hub holds raw SciKnowEval rows, filtered, formatted and split here as the reference does
    (a prepared file given directly is taken as it is, for whichever split names it)."""
    domain = spec.get("domain")
    if domain not in SCIKNOWEVAL_DOMAINS:
        raise SystemExit(f"data.datasets.{name}.domain = {domain!r}: must be one of {', '.join(SCIKNOWEVAL_DOMAINS)}")
    path = Path(spec["path"]).expanduser() if spec.get("path") else None
    if path is not None and path.is_dir():
        folder = path / domain if (path / domain).is_dir() else path
        return _sciknoweval_prepared(name, local_rows(folder, spec.get(f"{split}_split", split)))
    if path is not None:
        raw = local_rows(path, SCIKNOWEVAL_HUB_SPLIT)
    else:
        raw = hub_rows(name, spec.get("hub") or "hicai-zju/SciKnowEval", spec.get("hub_config"), SCIKNOWEVAL_HUB_SPLIT)
    if raw and "prompt" in raw[0]:
        return _sciknoweval_prepared(name, raw)
    chosen = [
        row for row in raw
        if str(row["domain"]).lower() == domain
        and row["details"]["level"] == SCIKNOWEVAL_LEVEL
        and row["type"] in SCIKNOWEVAL_TYPES
    ]
    train, test = sciknoweval_split(len(chosen))
    return [
        _record(name, idx, "mcq", _sciknoweval_prompt(chosen[idx]), chosen[idx]["answerKey"], system=SCIKNOWEVAL_SYSTEM)
        for idx in (train if split == "train" else test)
    ]


def _tooluse(name: str, spec: dict, split: str, settings: dict) -> list[dict]:
    """ToolAlpaca-style rows as the reference releases them: prompt, answer = JSON list of calls."""
    rows = _rows(name, spec, split)
    return [
        _record(name, row.get("idx", position), "tooluse", row["prompt"], row["answer"], system=row.get("system"))
        for position, row in enumerate(rows)
    ]


def _math_prompt(problem: str, spec: dict) -> str:
    return problem.strip() + "\n" + spec.get("instruction", MATH_INSTRUCTION)


def _aime(name: str, spec: dict, split: str, settings: dict) -> list[dict]:
    """AIME rows with ``problem`` and ``answer``; math-ai/aime24 gives the answer only as
    ``solution`` = ``\\boxed{N}``."""
    records = []
    for position, row in enumerate(_rows(name, spec, split)):
        has_answer = row.get("answer") not in (None, "")
        answer = str(row["answer"]).strip() if has_answer else last_boxed(row["solution"])
        solution = row.get("solution") if has_answer else None  # a worked solution, when separate
        records.append(_record(name, row.get("id", position), "math", _math_prompt(row["problem"], spec), answer,
                               system=spec.get("system"), solution=solution))
    return records


def _gsm8k(name: str, spec: dict, split: str, settings: dict) -> list[dict]:
    """GSM8K rows: ``question``, ``answer`` = rationale then ``#### N``."""
    records = []
    for position, row in enumerate(_rows(name, spec, split)):
        rationale, _, final = row["answer"].rpartition("####")
        answer = final.strip().replace(",", "")
        solution = _GSM8K_CALCULATOR.sub("", rationale).strip() + f"\n\\boxed{{{answer}}}"
        records.append(_record(name, position, "math", _math_prompt(row["question"], spec), answer,
                               system=spec.get("system"), solution=solution))
    return records


def _math500(name: str, spec: dict, split: str, settings: dict) -> list[dict]:
    """MATH-500 rows: ``problem``, ``solution``, ``answer``, ``unique_id``."""
    return [
        _record(name, row.get("unique_id", position), "math", _math_prompt(row["problem"], spec), str(row["answer"]).strip(),
                system=spec.get("system"), solution=row.get("solution"))
        for position, row in enumerate(_rows(name, spec, split))
    ]


def _reasoning_gym(name: str, spec: dict, split: str, settings: dict) -> list[dict]:
    """A reasoning-gym task, generated offline like the world's: data.train_size / test_size items,
    the test split drawn after the train items and with every train question removed."""
    import reasoning_gym

    task, options = spec["task"], spec.get("task_config", {})

    def generate(size: int, seed: int) -> list[dict]:
        return list(reasoning_gym.create_dataset(task, size=size, seed=seed, **options))

    train = generate(settings["train_size"], settings["seed"])
    if split == "train":
        items = train
    else:
        seen = {item["question"] for item in train}
        # reasoning-gym seeds item i with seed + i, so the test items start where the train items
        # end; extra candidates make up for questions the train split already has.
        candidates = generate(4 * settings["test_size"], settings["seed"] + settings["train_size"])
        items = [item for item in candidates if item["question"] not in seen][: settings["test_size"]]
        if len(items) < settings["test_size"]:
            raise SystemExit(f"data.datasets.{name}: reasoning-gym task {task!r} has too few distinct questions for test_size")
    return [
        _record(name, f"{split}{position}", "math", _math_prompt(item["question"], spec), str(item["answer"]),
                system=spec.get("system"))
        for position, item in enumerate(items)
    ]


ADAPTERS: dict[str, Callable[[str, dict, str, dict], list[dict]]] = {
    "sciknoweval": _sciknoweval,
    "tooluse": _tooluse,
    "aime": _aime,
    "gsm8k": _gsm8k,
    "math500": _math500,
    "reasoning_gym": _reasoning_gym,
}


def load_benchmark(name: str, spec: dict, split: str, settings: dict) -> list[dict]:
    """The records of benchmark or train target ``name`` for the pipeline's ``split`` ("train" or
    "test"), from its ``data.datasets`` entry ``spec``; ``settings`` is the ``data`` config."""
    adapter = ADAPTERS.get(spec.get("adapter"))
    if adapter is None:
        raise SystemExit(f"data.datasets.{name}.adapter = {spec.get('adapter')!r}: must be one of {', '.join(ADAPTERS)}")
    records = adapter(name, spec, split, settings)
    if spec.get("max_items"):
        records = records[: spec["max_items"]]
    if not records:
        raise SystemExit(f"data.datasets.{name}: no {split} rows")
    return records
