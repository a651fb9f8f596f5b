"""Real benchmarks as the pipeline's task records (docs/method.md, "Evaluation").

Every adapter returns the record the embedded world produces (rosd/world/tasks.py)::

    {"id", "domain", "kind", "system", "prompt", "answer", "solution", "steps"}

with ``kind`` "mcq", "tooluse" or "math" (graded by rosd.evaluation.grading), ``solution`` the dataset's
reference solution or None, and ``steps`` always [] (only the world knows a solution's steps).
``domain`` is the benchmark's name in the config, so every benchmark (each SciKnowEval domain
among them) stays its own, never pooled.

Every row comes through Hugging Face ``datasets.load_dataset``: a local JSONL/JSON/parquet file
as ``load_dataset("json" | "parquet", data_files=FILE, split="train")``, a directory as its
``<split>.{jsonl,json,parquet}`` file or else as datasets itself reads the directory (a downloaded
hub repository's ``data/<split>-*.parquet``), and a hub name as ``load_dataset(NAME, CONFIG,
split=SPLIT)``. So datasets' cache applies (HF_DATASETS_CACHE; a local file is re-read when it
changes) and, with the hub off, a hub dataset already in that cache still loads.

Data the adapters cannot use raises `DataError`, one line naming the file with its line (JSONL) or
row (JSON, parquet, hub; counted from 1) and the problem; nothing bad is taken silently.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from rosd.evaluation.grading import last_boxed
from rosd.io.files import jsonl_line
from rosd.io.hub import hub_offline, offline_message

# The usual instruction for boxed math answers (Qwen's), appended to the problem.
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# SciKnowEval as the reference prepares it: level-3 multiple choice (2 or 4 options), one domain,
# options as "A: ...", one system prompt for both option counts, and a 90/10 split with seed 42
# (numpy's permutation, as datasets' train_test_split draws it), which reproduces the reference's
# prepared files row for row.
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
_OPTION = re.compile(r"^([A-Z]): ", re.MULTILINE)  # a prepared SciKnowEval prompt's option line

# File suffix -> datasets' packaged builder.
BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class DataError(ValueError):
    """Data the adapters cannot use: one line naming the file (line or row) and the problem."""


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


# --- where rows come from: datasets.load_dataset, for files and hub names alike ---

class Rows(list):
    """A split's rows as plain dicts, in order, that can say where row i came from."""

    def __init__(self, rows: list[dict], source: str, file: Path | None = None, columns=()):
        super().__init__(rows)
        self.source = source  # a file, "DIR split 'S'" or "hub dataset 'NAME' split 'S'"
        self.file = file  # the one local file the rows came from, when there is one
        self.columns = tuple(columns)

    def where(self, position: int) -> str:
        """``FILE:LINE`` for a JSON Lines file, else ``SOURCE row N`` (both counted from 1)."""
        if self.file is not None and self.file.suffix != ".parquet" and not _is_json_array(self.file):
            if (lineno := jsonl_line(self.file, position)) is not None:
                return f"{self.file}:{lineno}"
        return f"{self.source} row {position + 1}"

    def error(self, position: int, problem: str) -> DataError:
        return DataError(f"{self.where(position)}: {problem}")


def repeated_id(records: list[dict]) -> tuple[int, int] | None:
    """(first, second) positions of the first id that two records share, None when all differ.
    A benchmark's samples and scores are kept per id, so a shared id would merge two problems."""
    seen: dict = {}
    for position, record in enumerate(records):
        key = json.dumps(record.get("id"), sort_keys=True)
        if key in seen:
            return seen[key], position
        seen[key] = position
    return None


def _unique_ids(rows: Rows, records: list[dict]) -> list[dict]:
    """``records`` (record i made from row i), refused with the row of a repeated id."""
    if (repeat := repeated_id(records)) is not None:
        first, second = repeat
        raise rows.error(second, f"id {records[second]['id']!r} repeats the id of {rows.where(first)}: "
                                 "every problem needs its own id (samples and scores are kept per id)")
    return records


def _one_line(error: BaseException) -> str:
    """The innermost cause of a library error, on one line (datasets wraps parse errors)."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _json_kind(value) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _is_json_array(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")


def _is_blank(path: Path) -> bool:
    return path.stat().st_size < 4096 and not path.read_bytes().strip()


def _check_not_one_object(path: Path) -> None:
    """datasets reads a ``.json`` file holding one object as one row; that is never a benchmark."""
    with path.open("rb") as handle:
        if not handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
            return
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return  # JSON Lines (or broken, which the load reports)
    if isinstance(value, dict):
        keys = ", ".join(list(value)[:5]) + (", ..." if len(value) > 5 else "")
        raise DataError(f"{path}: holds one JSON object (keys: {keys}), not rows: give a JSON list of row objects, "
                        "or one object per line (.jsonl)")


def _bad_json(path: Path) -> DataError | None:
    """The first line (or row) of a JSON/JSONL file that is not a JSON row object, if any."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if data.lstrip().startswith(b"["):
        try:
            value = json.loads(data)
        except json.JSONDecodeError as error:
            return DataError(f"{path}:{error.lineno}: not valid JSON ({error.msg}, column {error.colno})")
        except UnicodeDecodeError:
            return DataError(f"{path}: not UTF-8 text")
        for position, item in enumerate(value):
            if not isinstance(item, dict):
                return DataError(f"{path} row {position + 1}: a JSON {_json_kind(item)}, not a row object")
        return None
    for lineno, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            return DataError(f"{path}:{lineno}: not valid JSON ({error.msg}, column {error.colno})")
        except UnicodeDecodeError:
            return DataError(f"{path}:{lineno}: not UTF-8 text")
        if not isinstance(value, dict):
            return DataError(f"{path}:{lineno}: a JSON {_json_kind(value)}, not a row object")
    return None


@contextmanager
def _quiet_datasets():
    """No log lines or progress bars from datasets while it reads a local file (it takes a moment,
    and it logs its own error before raising, where we raise one line of our own)."""
    from datasets.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )
    from datasets.utils import logging as datasets_logging

    level, bars_were_off = datasets_logging.get_verbosity(), are_progress_bars_disabled()
    datasets_logging.set_verbosity(datasets_logging.CRITICAL)
    disable_progress_bars()
    try:
        yield
    finally:
        datasets_logging.set_verbosity(level)
        if not bars_were_off:
            enable_progress_bars()


def _file_rows(path: Path) -> Rows:
    """Rows of one local file through ``load_dataset("json" | "parquet", data_files=...)``."""
    builder = BUILDERS.get(path.suffix)
    if builder is None:
        raise SystemExit(f"{path}: not a .jsonl, .json or .parquet file")
    if builder == "json":
        if _is_blank(path):
            return Rows([], str(path), path)  # datasets stops on an empty file; no rows is said below
        if path.suffix == ".json":
            _check_not_one_object(path)
    import datasets

    try:
        with _quiet_datasets():
            dataset = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as error:
        bad = _bad_json(path) if builder == "json" else None
        if bad is not None:
            raise bad from None
        raise DataError(f"{path}: datasets could not read it: {_one_line(error)}") from None
    return Rows(dataset.to_list(), str(path), path, dataset.column_names)


def _directory_rows(path: Path, split_name: str) -> Rows:
    """A directory without ``<split>.{jsonl,json,parquet}``, read as datasets reads a directory."""
    import datasets

    try:
        with _quiet_datasets():
            dataset = datasets.load_dataset(str(path), split=split_name)
    except (FileNotFoundError, ValueError) as error:
        message = _one_line(error)
        if "split" not in message.lower() and "data files" not in message.lower():
            raise DataError(f"{path}: datasets could not read split {split_name!r}: {message}") from None
        raise SystemExit(f"no {split_name}.jsonl, .json or .parquet in {path}, and datasets finds no "
                         f"{split_name!r} split there ({message})") from None
    except Exception as error:
        raise DataError(f"{path}: datasets could not read split {split_name!r}: {_one_line(error)}") from None
    return Rows(dataset.to_list(), f"{path} split {split_name!r}", None, dataset.column_names)


def split_file(directory: Path, split_name: str) -> Path | None:
    """``<directory>/<split_name>.{jsonl,json,parquet}``, the first that exists, or None."""
    return next((directory / f"{split_name}{suffix}" for suffix in BUILDERS if (directory / f"{split_name}{suffix}").is_file()), None)


def local_rows(path: Path, split_name: str) -> Rows:
    """Rows of a file, or of ``<dir>/<split_name>.{jsonl,json,parquet}`` when ``path`` is a
    directory (else of the directory's ``split_name`` split as datasets finds it)."""
    if path.is_dir():
        found = split_file(path, split_name)
        return _file_rows(found) if found else _directory_rows(path, split_name)
    if not path.exists():
        raise SystemExit(f"no such data file or directory: {path}")
    return _file_rows(path)


def hub_rows(name: str, hub: str, config: str | None, split_name: str) -> Rows:
    """Rows of a public dataset's split, downloaded into (or, with the hub off, read from)
    datasets' cache; one clear line, at once, when the hub is off and it is not cached."""
    import datasets

    source = f"hub dataset {hub!r}" + (f" ({config})" if config else "") + f" split {split_name!r}"
    offline = hub_offline() or datasets.config.HF_HUB_OFFLINE
    instead = f"give a local JSONL/JSON/parquet file or directory in data.datasets.{name}.path"
    if offline and not datasets.config.HF_HUB_OFFLINE:
        # the variables were set after datasets was imported: it would go online, so do not try
        raise SystemExit(offline_message(f"data.datasets.{name}.hub", hub, instead))
    try:
        dataset = datasets.load_dataset(hub, config, split=split_name)
    except (ConnectionError, FileNotFoundError) as error:
        if offline:
            raise SystemExit(offline_message(f"data.datasets.{name}.hub", hub, instead)) from None
        raise SystemExit(f"data.datasets.{name}.hub = {hub!r}: datasets could not load it: {_one_line(error)}") from None
    except Exception as error:
        raise SystemExit(f"data.datasets.{name}.hub = {hub!r}: datasets could not load split {split_name!r}: "
                         f"{_one_line(error)}") from None
    return Rows(dataset.to_list(), source, None, dataset.column_names)


def _rows(name: str, spec: dict, split: str) -> Rows:
    """The rows of the pipeline's split ("train"/"test"), named by the entry's train_split/test_split."""
    split_name = spec.get(f"{split}_split", split)
    if spec.get("path"):
        return local_rows(Path(spec["path"]).expanduser(), split_name)
    if spec.get("hub"):
        return hub_rows(name, spec["hub"], spec.get("hub_config"), split_name)
    raise SystemExit(f"data.datasets.{name}: give a local 'path' or a public 'hub' dataset name")


# --- checks of single values: a missing key and a null are the same to datasets ---

def _get(row: dict, key: str, default=None):
    value = row.get(key)
    return default if value is None else value


def _text(rows: Rows, position: int, row: dict, key: str) -> str:
    """The row's non-empty string ``key``, else a DataError naming the row."""
    value = row.get(key)
    if value is None:
        raise rows.error(position, f"no {key!r} (missing or null)")
    if not isinstance(value, str):
        raise rows.error(position, f"{key!r} is a {type(value).__name__}, not a string: {value!r:.80}")
    if not value.strip():
        raise rows.error(position, f"{key!r} is empty")
    return value


def _scalar_answer(rows: Rows, position: int, row: dict, key: str = "answer") -> str:
    """A string or number answer as a stripped string (never 'None')."""
    value = row.get(key)
    if value is None:
        raise rows.error(position, f"no {key!r} (missing or null)")
    if isinstance(value, (dict, list, bool)):
        raise rows.error(position, f"{key!r} is a {type(value).__name__}, not a string or number: {value!r:.80}")
    answer = str(value).strip()
    if not answer:
        raise rows.error(position, f"{key!r} is empty")
    return answer


# --- adapters: (name, entry, split "train"/"test", data settings) -> records ---

def _sciknoweval_prompt(row: dict) -> str:
    choices = row["choices"]
    options = "\n".join(f"{label}: {text}" for label, text in zip(choices["label"], choices["text"]))
    return row["question"] + "\n\n" + options + "\nPlease reason step by step."


def _prompt_options(prompt: str) -> list[str]:
    """The option letters of a prepared prompt: the last run of "A: ", "B: ", ... lines."""
    labels = _OPTION.findall(prompt)
    if "A" not in labels:
        return []
    return labels[len(labels) - 1 - labels[::-1].index("A"):]


def sciknoweval_split(n: int) -> tuple[list[int], list[int]]:
    """(train, test) row positions of the reference's 90/10 split of n rows."""
    import numpy

    order = numpy.random.default_rng(SCIKNOWEVAL_SPLIT_SEED).permutation(n).tolist()
    n_test = math.ceil(SCIKNOWEVAL_TEST_FRACTION * n)
    return order[n_test:], order[:n_test]


def _sciknoweval_prepared(name: str, rows: Rows) -> list[dict]:
    records = []
    for position, row in enumerate(rows):
        prompt, answer = _text(rows, position, row, "prompt"), _text(rows, position, row, "answer").strip()
        options = _prompt_options(prompt)
        if not options:
            raise rows.error(position, "its 'prompt' has no option lines ('A: ...', 'B: ...')")
        if answer not in options:
            raise rows.error(position, f"answer {answer!r} is not one of its options {', '.join(options)}")
        records.append(_record(name, _get(row, "idx", position), "mcq", prompt, answer, system=row.get("system")))
    return _unique_ids(rows, records)


def _sciknoweval_raw(rows: Rows, domain: str) -> list[tuple[int, dict]]:
    """(position, row) of the raw rows the reference keeps: the domain's level-3 multiple choice,
    each checked (question, options, an answer letter among them)."""
    chosen = []
    for position, row in enumerate(rows):
        details = row.get("details")
        if row.get("domain") is None or row.get("type") is None or not isinstance(details, dict):
            raise rows.error(position, "a raw SciKnowEval row needs 'domain', 'type' and 'details' (with 'level'), "
                                       "or a prepared row needs 'prompt'")
        if not (str(row["domain"]).lower() == domain and details.get("level") == SCIKNOWEVAL_LEVEL
                and row["type"] in SCIKNOWEVAL_TYPES):
            continue
        _text(rows, position, row, "question")
        choices = row.get("choices")
        labels = choices.get("label") if isinstance(choices, dict) else None
        texts = choices.get("text") if isinstance(choices, dict) else None
        if not labels or not isinstance(labels, list) or not isinstance(texts, list) or len(labels) != len(texts):
            raise rows.error(position, "'choices' must hold 'label' and 'text' lists of the same length")
        answer = _text(rows, position, row, "answerKey").strip()
        if answer not in labels:
            raise rows.error(position, f"answerKey {answer!r} is not one of its options {', '.join(map(str, labels))}")
        chosen.append((position, {**row, "answerKey": answer}))
    return chosen


def _sciknoweval(name: str, spec: dict, split: str, settings: dict) -> list[dict]:
    """One SciKnowEval domain. A local directory holds the reference's prepared rows
    (``<path>/<domain>/<split>.jsonl``, as the reference writes them), taken as they are; a local file or
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
    if "prompt" in raw.columns:
        return _sciknoweval_prepared(name, raw)
    chosen = _sciknoweval_raw(raw, domain)
    train, test = sciknoweval_split(len(chosen))
    return [
        _record(name, idx, "mcq", _sciknoweval_prompt(chosen[idx][1]), chosen[idx][1]["answerKey"], system=SCIKNOWEVAL_SYSTEM)
        for idx in (train if split == "train" else test)
    ]


def _check_tool_calls(rows: Rows, position: int, answer) -> None:
    """The gold answer must be a JSON list (or a list) of {"Action": name, "Action_Input": JSON
    object text, or an object}: what rosd.evaluation.grading.gold_tool_calls reads."""
    shape = 'a JSON list of {"Action": ..., "Action_Input": ...} calls'
    if isinstance(answer, str):
        try:
            calls = json.loads(answer)
        except json.JSONDecodeError as error:
            raise rows.error(position, f"'answer' is not valid JSON ({error.msg}, column {error.colno}); it must be {shape}") from None
    else:
        calls = answer
    if not isinstance(calls, list) or not calls:
        raise rows.error(position, f"'answer' is {'an empty list' if calls == [] else 'a JSON ' + _json_kind(calls)}; it must be {shape}")
    for number, call in enumerate(calls, 1):
        if not isinstance(call, dict) or "Action" not in call or "Action_Input" not in call:
            raise rows.error(position, f"'answer' call {number} is not an object with 'Action' and 'Action_Input': {call!r:.80}")
        if not isinstance(call["Action"], str) or not call["Action"].strip():
            raise rows.error(position, f"'answer' call {number} has no action name: {call['Action']!r:.80}")
        given = call["Action_Input"] or "{}"
        if isinstance(given, str):
            try:
                given = json.loads(given)
            except json.JSONDecodeError as error:
                raise rows.error(position, f"'answer' call {number} ({call['Action']}): Action_Input is not valid JSON ({error.msg})") from None
        if not isinstance(given, dict):
            raise rows.error(position, f"'answer' call {number} ({call['Action']}): Action_Input is a JSON {_json_kind(given)}, not an object")


def _tooluse(name: str, spec: dict, split: str, settings: dict) -> list[dict]:
    """ToolAlpaca-style rows as the reference releases them: prompt, answer = JSON list of calls."""
    rows = _rows(name, spec, split)
    records = []
    for position, row in enumerate(rows):
        prompt = _text(rows, position, row, "prompt")
        if row.get("answer") is None:
            raise rows.error(position, "no 'answer' (missing or null)")
        _check_tool_calls(rows, position, row["answer"])
        records.append(_record(name, _get(row, "idx", position), "tooluse", prompt, row["answer"], system=row.get("system")))
    return _unique_ids(rows, records)


def _math_prompt(problem: str, spec: dict) -> str:
    return problem.strip() + "\n" + spec.get("instruction", MATH_INSTRUCTION)


def _aime(name: str, spec: dict, split: str, settings: dict) -> list[dict]:
    """AIME rows with ``problem`` and ``answer``; math-ai/aime24 gives the answer only as
    ``solution`` = ``\\boxed{N}``."""
    records = []
    rows = _rows(name, spec, split)
    for position, row in enumerate(rows):
        problem = _text(rows, position, row, "problem")
        if row.get("answer") not in (None, ""):
            answer = _scalar_answer(rows, position, row)
            solution = row.get("solution")  # a worked solution, when separate
        else:
            given = row.get("solution")
            answer = last_boxed(given) if isinstance(given, str) else None
            if answer is None or not answer.strip():
                raise rows.error(position, "neither an 'answer' nor a \\boxed{} answer in its 'solution'")
            solution = None
        records.append(_record(name, _get(row, "id", position), "math", _math_prompt(problem, spec), answer,
                               system=spec.get("system"), solution=solution))
    return _unique_ids(rows, records)


def _gsm8k(name: str, spec: dict, split: str, settings: dict) -> list[dict]:
    """GSM8K rows: ``question``, ``answer`` = rationale then ``#### N``."""
    records = []
    rows = _rows(name, spec, split)
    for position, row in enumerate(rows):
        question = _text(rows, position, row, "question")
        rationale, marker, final = _text(rows, position, row, "answer").rpartition("####")
        answer = final.strip().replace(",", "")
        if not marker or not answer:
            raise rows.error(position, "its 'answer' does not end with the final answer as '#### N'")
        solution = _GSM8K_CALCULATOR.sub("", rationale).strip() + f"\n\\boxed{{{answer}}}"
        records.append(_record(name, position, "math", _math_prompt(question, spec), answer,
                               system=spec.get("system"), solution=solution))
    return records


def _math500(name: str, spec: dict, split: str, settings: dict) -> list[dict]:
    """MATH-500 rows: ``problem``, ``solution``, ``answer``, ``unique_id``."""
    rows = _rows(name, spec, split)
    return _unique_ids(rows, [
        _record(name, _get(row, "unique_id", position), "math", _math_prompt(_text(rows, position, row, "problem"), spec),
                _scalar_answer(rows, position, row), system=spec.get("system"), solution=row.get("solution"))
        for position, row in enumerate(rows)
    ])


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
# Adapters whose records carry no reference solution (``solution`` None): a teacher that reads the
# dataset's solution (opsd) has nothing to read on them, so the workflow refuses that pairing.
ADAPTERS_WITHOUT_SOLUTIONS = ("sciknoweval", "tooluse", "reasoning_gym")


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
