"""Real benchmarks through rosd.evaluation.datasets (every row via Hugging Face datasets.load_dataset), graded
by rosd.evaluation.grading (docs/fidelity.md, Verifiers), and the one-line DataError for each kind of bad data.

The real files live in ../shared/data (beside the checkout, never copied into it); tests that need
them skip, with the reason, where they are absent. datasets' cache is a temporary directory here,
so nothing a developer has cached changes what the tests see.
"""

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rosd.evaluation.datasets import (
    SCIKNOWEVAL_DOMAINS,
    SCIKNOWEVAL_SYSTEM,
    DataError,
    load_benchmark,
    sciknoweval_split,
)
from rosd.evaluation.grading import score
from rosd.stages.data import init_model

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real benchmark data not found at {SHARED}")
RECORD_KEYS = {"id", "domain", "kind", "system", "prompt", "answer", "solution", "steps"}
SPLIT_SIZES = {"biology": (450, 50), "chemistry": (1890, 210), "material": (841, 94), "physics": (720, 80)}  # ../shared/data/README.md


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path_factory, monkeypatch):
    """One datasets cache for this session's tests, not the developer's (~/.cache/huggingface)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "hf_datasets_cache")


@pytest.fixture
def load_calls(monkeypatch):
    """Every datasets.load_dataset call rosd.evaluation.datasets makes, as (args, kwargs), calls passed through."""
    import datasets

    calls, real = [], datasets.load_dataset

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    return calls


def sciknoweval(domain: str, split: str, path=None) -> list[dict]:
    spec = {"adapter": "sciknoweval", "domain": domain, "path": str(path or SHARED / "sciknoweval")}
    return load_benchmark(f"sciknoweval_{domain}", spec, split, {})


def mcq_response(letter: str) -> str:
    return f"<reasoning>\nLet me think about each option.\n</reasoning>\n<answer>\n{letter}\n</answer>"


def loaded_files(calls) -> list[tuple[str, Path]]:
    """(builder, file) of each datasets.load_dataset call on a local file."""
    return [(args[0], Path(kwargs["data_files"])) for args, kwargs in calls if "data_files" in kwargs]


@needs_shared
def test_sciknoweval_domains_stay_four_benchmarks(load_calls):
    seen_prompts = set()
    for domain in SCIKNOWEVAL_DOMAINS:
        train, test = sciknoweval(domain, "train"), sciknoweval(domain, "test")
        assert loaded_files(load_calls[-2:]) == [("json", SHARED / "sciknoweval" / domain / f"{split}.jsonl") for split in ("train", "test")]
        assert (len(train), len(test)) == SPLIT_SIZES[domain]  # this domain's files, and only them
        assert {r["domain"] for r in train + test} == {f"sciknoweval_{domain}"}
        assert all(set(r) == RECORD_KEYS and r["kind"] == "mcq" and r["steps"] == [] for r in train + test)
        assert len({r["id"] for r in train + test}) == len(train) + len(test)
        prompts = {r["prompt"] for r in train + test}
        assert not prompts & seen_prompts  # no question of another domain: never pooled
        seen_prompts |= prompts


@needs_shared
def test_sciknoweval_gold_answers_grade_one_and_other_letters_zero():
    graded = 0
    for domain in SCIKNOWEVAL_DOMAINS:
        for task in sciknoweval(domain, "test"):
            assert score("mcq", mcq_response(task["answer"]), task["answer"]) == 1.0
            for wrong in sorted({"A", "B", "C", "D"} - {task["answer"]}):
                assert score("mcq", mcq_response(wrong), task["answer"]) == 0.0
            graded += 1
    assert graded == sum(test for _, test in SPLIT_SIZES.values())


@needs_shared
def test_raw_sciknoweval_is_split_and_formatted_as_the_reference():
    """The hub's raw rows go through the same split as ../shared/data was made with: the shared
    files' row ids (positions among a domain's filtered rows) are exactly our split's positions."""
    for domain, (n_train, n_test) in SPLIT_SIZES.items():
        train, test = sciknoweval_split(n_train + n_test)
        assert [int(r["id"].rsplit("-", 1)[1]) for r in sciknoweval(domain, "test")] == test
        assert [int(r["id"].rsplit("-", 1)[1]) for r in sciknoweval(domain, "train")] == train
    assert sciknoweval("physics", "test")[0]["system"] == SCIKNOWEVAL_SYSTEM


def test_raw_sciknoweval_rows_are_filtered_to_one_domain_level_3_multiple_choice(tmp_path):
    def raw(i, domain="Biology", level="L3", kind="mcq-4-choices"):
        labels = ["A", "B", "C", "D"] if kind == "mcq-4-choices" else ["A", "B"]
        return {"question": f"Q{i}?", "choices": {"label": labels, "text": [f"t{j}" for j in range(len(labels))]},
                "answerKey": "B", "domain": domain, "details": {"level": level}, "type": kind}

    rows = [raw(i) for i in range(18)] + [raw(18, kind="mcq-2-choices"), raw(19, domain="Chemistry"),
                                          raw(20, level="L2"), raw(21, kind="open-ended-qa")]
    path = tmp_path / "sciknoweval_test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, test = sciknoweval("biology", "train", path), sciknoweval("biology", "test", path)
    assert (len(train), len(test)) == (17, 2)  # 19 kept rows, ceil(10%) of them for test
    assert {r["prompt"].split("?")[0] for r in train + test} == {f"Q{i}" for i in range(19)}
    two_options = next(r for r in train + test if r["prompt"].startswith("Q18?"))
    assert two_options["prompt"] == "Q18?\n\nA: t0\nB: t1\nPlease reason step by step."
    assert two_options["system"] == SCIKNOWEVAL_SYSTEM and two_options["answer"] == "B"


def react_response(calls: list[dict]) -> str:
    """Gold calls written the way a model answers: a thought, then one Action/Action Input per call."""
    steps = []
    for call in calls:
        inputs = json.loads(call["Action_Input"] or "{}")
        steps.append(f"Thought: I should call {call['Action']}.\nAction: {call['Action']}\nAction Input: {json.dumps(inputs)}")
    return "\n".join(steps)


@needs_shared
def test_tooluse_gold_calls_grade_one_and_broken_calls_zero(load_calls):
    tasks = load_benchmark("tooluse", {"adapter": "tooluse", "path": str(SHARED / "tooluse")}, "test", {})
    assert loaded_files(load_calls) == [("json", SHARED / "tooluse" / "test.jsonl")]
    assert len(tasks) == 68 and {t["kind"] for t in tasks} == {"tooluse"}
    lenient = functools.partial(score, mode="lenient")
    changed_arguments, unsolvable_under_reference = 0, 0
    for task in tasks:
        calls = json.loads(task["answer"])
        # docs/fidelity.md, Verifiers: the reference's non-greedy {.*?} cannot read a nested input object
        unsolvable_under_reference += score("tooluse", react_response(calls), task["answer"]) == 0.0
        assert lenient("tooluse", react_response(calls), task["answer"]) == 1.0
        assert lenient("tooluse", react_response(calls[:-1]), task["answer"]) == 0.0  # a missing action
        assert lenient("tooluse", react_response(calls + calls[:1]), task["answer"]) == 0.0  # an extra one
        with_arguments = [i for i, c in enumerate(calls) if json.loads(c["Action_Input"] or "{}")]
        if with_arguments:
            i = with_arguments[-1]  # inputs are merged across calls: the last call's values are the ones compared
            inputs = json.loads(calls[i]["Action_Input"])
            key = sorted(inputs)[0]
            inputs[key] = f"{inputs[key]}-changed"
            changed = [*calls[:i], {**calls[i], "Action_Input": json.dumps(inputs)}, *calls[i + 1 :]]
            assert lenient("tooluse", react_response(changed), task["answer"]) == 0.0
            changed_arguments += 1
    assert changed_arguments > 40  # most tasks have arguments to change
    assert unsolvable_under_reference == 2


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_math_adapters_read_local_files_in_their_public_schemas(tmp_path, load_calls):
    aime24 = write_jsonl(tmp_path / "aime24.jsonl", [{"id": 60 + i, "problem": f"P{i}", "solution": f"\\boxed{{{i}}}"} for i in range(30)])
    tasks = load_benchmark("aime24", {"adapter": "aime", "path": str(aime24)}, "test", {})
    assert len(tasks) == 30  # all 30 problems
    assert [t["answer"] for t in tasks] == [str(i) for i in range(30)] and tasks[0]["solution"] is None
    assert tasks[0]["prompt"] == "P0\nPlease reason step by step, and put your final answer within \\boxed{}."
    assert score("math", "so \\boxed{7}", tasks[7]["answer"]) == 1.0

    aime25 = write_jsonl(tmp_path / "test.jsonl", [{"problem": "P", "answer": 70}])
    (task,) = load_benchmark("aime25", {"adapter": "aime", "path": str(tmp_path), "instruction": "Box it."}, "test", {})
    assert (task["answer"], task["prompt"], task["id"]) == ("70", "P\nBox it.", "aime25-0")

    gsm8k = write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "Q", "answer": "2 * 617 = <<2*617=1234>>1234\n#### 1,234"}])
    (task,) = load_benchmark("gsm8k", {"adapter": "gsm8k", "path": str(gsm8k)}, "train", {})
    assert task["answer"] == "1234"
    assert task["solution"] == "2 * 617 = 1234\n\\boxed{1234}" and score("math", task["solution"], task["answer"]) == 1.0

    import pyarrow
    import pyarrow.parquet

    rows = [{"problem": "P", "solution": "S \\boxed{\\frac{1}{2}}", "answer": "\\frac{1}{2}", "unique_id": "test/x.json"}]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), tmp_path / "math500.parquet")
    (task,) = load_benchmark("math500", {"adapter": "math500", "path": str(tmp_path / "math500.parquet")}, "test", {})
    assert (task["id"], task["answer"], task["solution"]) == ("math500-test/x.json", "\\frac{1}{2}", rows[0]["solution"])
    assert loaded_files(load_calls) == [("json", aime24), ("json", aime25), ("json", gsm8k), ("parquet", tmp_path / "math500.parquet")]


@needs_shared
def test_sciknoweval_from_a_prepared_file_and_a_json_array(tmp_path, load_calls):
    """A prepared file given directly (JSONL, or the same rows as one JSON list) is taken as it is."""
    physics = SHARED / "sciknoweval" / "physics" / "test.jsonl"
    from_dir = sciknoweval("physics", "test")
    as_list = tmp_path / "physics.json"
    as_list.write_text(json.dumps([json.loads(line) for line in physics.read_text().splitlines() if line.strip()]))
    assert sciknoweval("physics", "test", physics) == from_dir == sciknoweval("physics", "train", as_list)
    assert [file for _, file in loaded_files(load_calls)] == [physics.parent / "test.jsonl", physics, as_list]


def test_a_directory_in_the_hubs_layout_and_a_changed_file(tmp_path):
    """A directory without <split>.jsonl is read as datasets reads it (a downloaded hub repository's
    data/<split>-*.parquet), and datasets' cache never serves a file's old rows after it changes."""
    import pyarrow
    import pyarrow.parquet

    (tmp_path / "aime25" / "data").mkdir(parents=True)
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist([{"problem": "P", "answer": "12"}]),
                                tmp_path / "aime25" / "data" / "test-00000-of-00001.parquet")
    (task,) = load_benchmark("aime25", {"adapter": "aime", "path": str(tmp_path / "aime25")}, "test", {})
    assert task["answer"] == "12"
    with pytest.raises(SystemExit, match="no train.jsonl, .json or .parquet in .*aime25.*'train'"):
        load_benchmark("aime25", {"adapter": "aime", "path": str(tmp_path / "aime25")}, "train", {})

    path = write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "Q", "answer": "#### 1"}])
    spec = {"adapter": "gsm8k", "path": str(path)}
    assert [t["answer"] for t in load_benchmark("gsm8k", spec, "test", {})] == ["1"]
    write_jsonl(path, [{"question": "Q", "answer": "#### 2"}, {"question": "R", "answer": "#### 3"}])
    os.utime(path, (time.time() + 5, time.time() + 5))  # a new mtime even on a coarse clock
    assert [t["answer"] for t in load_benchmark("gsm8k", spec, "test", {})] == ["2", "3"]


def test_reasoning_gym_splits_are_disjoint_and_gradable():
    pytest.importorskip("reasoning_gym")
    spec = {"adapter": "reasoning_gym", "task": "basic_arithmetic",
            "task_config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2, "operators": ["+"],
                            "allow_parentheses": False, "allow_negation": False}}
    settings = {"train_size": 40, "test_size": 10, "seed": 7}
    train, test = (load_benchmark("arith", spec, split, settings) for split in ("train", "test"))
    assert (len(train), len(test)) == (40, 10)
    assert not {t["prompt"] for t in train} & {t["prompt"] for t in test}
    assert load_benchmark("arith", spec, "test", settings) == test  # the same data every time
    for task in test:
        a, b = task["prompt"].split("Calculate ")[1].split(".")[0].split(" + ")
        assert score(task["kind"], f"\\boxed{{{int(a) + int(b)}}}", task["answer"]) == 1.0


def offline_env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_offline_hub_names_fail_at_once_with_one_line(monkeypatch, tmp_path):
    offline_env(monkeypatch)
    started = time.monotonic()
    with pytest.raises(SystemExit) as data_error:
        load_benchmark("aime24", {"adapter": "aime", "hub": "math-ai/aime24"}, "test", {})
    with pytest.raises(SystemExit) as model_error:
        init_model(settings={"init": "path", "path": "Qwen/Qwen3-4B-not-cached"}, out=str(tmp_path / "theta0"))
    assert time.monotonic() - started < 5
    for error, name, hint in [(data_error, "math-ai/aime24", "data.datasets.aime24.path"), (model_error, "Qwen/Qwen3-4B-not-cached", "local model directory")]:
        message = str(error.value)
        assert name in message and hint in message and "HF_HUB_OFFLINE" in message and "\n" not in message


@pytest.mark.pipeline
def test_offline_hub_name_through_the_rosd_command(tmp_path):
    """The rosd command turns the hub off by default: one line on stderr, a failed exit, no retries."""
    settings = {"source": "world", "train_size": 1, "test_size": 1, "seed": 0,
                "datasets": {"aime24": {"adapter": "aime", "hub": "math-ai/aime24"}}}
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_DATASETS_CACHE"] = str(tmp_path / "hf_datasets_cache")  # not the developer's cache
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "rosd.cli", "prepare-data", "--name", "aime24", "--split", "test",
         "--out", str(tmp_path / "out.jsonl"), "--settings", json.dumps(settings)],
        capture_output=True, text=True, env=env,
    )
    assert time.monotonic() - started < 30  # interpreter start-up on a loaded machine, no network wait
    assert result.returncode != 0 and not (tmp_path / "out.jsonl").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "math-ai/aime24" in lines[0], result.stderr


def model_directory(path: Path) -> Path:
    """A Hugging Face directory (config and tokenizer with a chat template; weights need not be)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    LlamaConfig(vocab_size=2, hidden_size=8, num_hidden_layers=1, num_attention_heads=1).save_pretrained(path)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")))
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tokenizer.save_pretrained(path)
    return path


def test_local_model_directory_is_linked_not_copied(tmp_path):
    source = model_directory(tmp_path / "source")
    out = tmp_path / "theta0"
    init_model(settings={"init": "path", "path": str(source)}, out=str(out))
    entries = sorted(out.iterdir())
    assert {e.name for e in entries} == {e.name for e in source.iterdir()}
    assert all(e.is_symlink() and e.resolve() == (source / e.name).resolve() for e in entries)
    from transformers import AutoConfig, AutoTokenizer

    # the standard API reads θ0 through the links
    assert AutoConfig.from_pretrained(out).hidden_size == 8 and AutoTokenizer.from_pretrained(out).chat_template


@needs_shared
@pytest.mark.pipeline
def test_prepare_data_rule_writes_a_sciknoweval_benchmark(tmp_path):
    overlay = tmp_path / "sciknoweval.yaml"
    overlay.write_text(json.dumps({"data": {"datasets": {"sciknoweval_physics": {
        "adapter": "sciknoweval", "domain": "physics", "path": str(SHARED / "sciknoweval")}}}}))
    target = "results/tiny/data/test/sciknoweval_physics.jsonl"
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--cores", "1",
         "--configfile", str(REPO / "config" / "config.yaml"), str(REPO / "tests" / "configs" / "tiny.yaml"), str(overlay),
         "--", target],
        capture_output=True, text=True, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tasks = [json.loads(line) for line in (tmp_path / target).read_text().splitlines()]
    assert len(tasks) == 80 and {t["domain"] for t in tasks} == {"sciknoweval_physics"}


@pytest.mark.parametrize("preset", ["paper_qwen3_4b", "paper_qwen3_8b", "smollm2_cpu"])
def test_presets_are_valid_layered_on_the_default(preset):
    import yaml

    from rosd.jobs.config import check

    def layered(base: dict, over: dict) -> dict:  # what Snakemake does with several --configfile
        return {**base, **{k: layered(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                           for k, v in over.items()}}

    config = layered(yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
                     yaml.safe_load((REPO / "config" / f"{preset}.yaml").read_text()))
    check(config)
    assert set(config["targets"]) | set(config["benchmarks"]) <= set(config["data"]["datasets"])


# --- bad data: one line naming the file, the line or row, and the problem; never a traceback ---

def data_error(name: str, spec: dict, split: str = "test") -> str:
    """The DataError message loading ``spec`` gives; it is one line."""
    with pytest.raises(DataError) as error:
        load_benchmark(name, spec, split, {})
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, ValueError)
    return message


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


TOOLUSE_ANSWER = json.dumps([{"Action": "search", "Action_Input": json.dumps({"q": "x"})}])


@pytest.mark.parametrize("bad, line, problem", [
    ('{"prompt": "P2", "answer": ', 3, "not valid JSON"),  # cut off
    ('{"prompt": "P2", "answer": "[]",}', 3, "not valid JSON"),  # trailing comma
    ('["P2", "[]"]', 3, "a JSON list, not a row object"),
])
def test_malformed_jsonl_line_names_the_file_and_line(tmp_path, bad, line, problem):
    good = json.dumps({"prompt": "P1", "answer": TOOLUSE_ANSWER})
    path = write_lines(tmp_path / "test.jsonl", [good, "", bad, good])  # line 2 is blank
    message = data_error("tooluse", {"adapter": "tooluse", "path": str(tmp_path)})
    assert message.startswith(f"{path}:{line}: ") and problem in message


@pytest.mark.parametrize("adapter, row, missing", [
    ("tooluse", {"prompt": "P"}, "answer"),
    ("tooluse", {"answer": TOOLUSE_ANSWER}, "prompt"),
    ("tooluse", {"prompt": None, "answer": TOOLUSE_ANSWER}, "prompt"),
    ("aime", {"answer": "3"}, "problem"),
    ("gsm8k", {"answer": "#### 3"}, "question"),
    ("gsm8k", {"question": "Q"}, "answer"),
    ("math500", {"answer": "3"}, "problem"),
    ("sciknoweval", {"idx": 1, "prompt": "Q?\n\nA: x\nB: y\nPlease reason step by step.", "system": "S"}, "answer"),
])
def test_rows_missing_a_required_field_name_the_line(tmp_path, adapter, row, missing):
    good = {"tooluse": {"prompt": "P", "answer": TOOLUSE_ANSWER}, "aime": {"problem": "P", "answer": "1"},
            "gsm8k": {"question": "Q", "answer": "#### 1"}, "math500": {"problem": "P", "answer": "1"},
            "sciknoweval": {"idx": 0, "prompt": "Q?\n\nA: x\nB: y\nPlease reason step by step.", "answer": "A", "system": "S"}}[adapter]
    path = write_jsonl(tmp_path / "rows.jsonl", [good, good, row])
    spec = {"adapter": adapter, "path": str(path), "domain": "physics"} if adapter == "sciknoweval" else {"adapter": adapter, "path": str(path)}
    message = data_error(adapter, spec)
    assert message.startswith(f"{path}:3: ") and f"no {missing!r}" in message


def test_json_file_holding_an_object_not_rows(tmp_path):
    path = tmp_path / "aime.json"
    path.write_text(json.dumps({"problem": ["P1", "P2"], "answer": ["1", "2"]}, indent=2))
    message = data_error("aime", {"adapter": "aime", "path": str(path)})
    assert message.startswith(f"{path}: ") and "one JSON object" in message and "not rows" in message


def test_aime_row_with_neither_answer_nor_boxed_solution(tmp_path):
    path = write_jsonl(tmp_path / "aime24.jsonl", [{"problem": "P0", "solution": "\\boxed{1}"},
                                                   {"problem": "P1", "solution": "the answer is 7"}])
    message = data_error("aime24", {"adapter": "aime", "path": str(path)})
    assert message.startswith(f"{path}:2: ") and "neither an 'answer' nor a \\boxed{} answer" in message
    path = write_jsonl(tmp_path / "aime25.jsonl", [{"problem": "P0", "answer": None}])
    assert data_error("aime25", {"adapter": "aime", "path": str(path)}).startswith(f"{path}:1: neither")


def test_sciknoweval_answer_letter_not_among_the_options(tmp_path):
    prepared = tmp_path / "physics"
    prepared.mkdir()
    prompt = "Q?\n\nA: 1\nB: 2\nC: 3\nD: 4\nPlease reason step by step."
    path = write_jsonl(prepared / "test.jsonl", [{"idx": 0, "prompt": prompt, "answer": "B", "system": "S"},
                                                 {"idx": 1, "prompt": prompt, "answer": "E", "system": "S"}])
    message = data_error("sciknoweval_physics", {"adapter": "sciknoweval", "domain": "physics", "path": str(tmp_path)})
    assert message.startswith(f"{path}:2: ") and "answer 'E' is not one of its options A, B, C, D" in message

    raw = {"question": "Q?", "choices": {"label": ["A", "B"], "text": ["x", "y"]}, "answerKey": "C",
           "domain": "Physics", "details": {"level": "L3"}, "type": "mcq-2-choices"}
    path = write_jsonl(tmp_path / "raw.jsonl", [raw])
    message = data_error("sciknoweval_physics", {"adapter": "sciknoweval", "domain": "physics", "path": str(path)})
    assert message.startswith(f"{path}:1: ") and "answerKey 'C' is not one of its options A, B" in message


def test_math500_null_answer_is_an_error_not_the_string_none(tmp_path):
    import pyarrow
    import pyarrow.parquet

    rows = [{"problem": "P", "answer": "1", "unique_id": "a"}, {"problem": "Q", "answer": None, "unique_id": "b"}]
    path = tmp_path / "test.parquet"
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    message = data_error("math500", {"adapter": "math500", "path": str(path)})
    assert message.startswith(f"{path} row 2: ") and "no 'answer'" in message
    path = write_jsonl(tmp_path / "test.jsonl", rows)
    assert data_error("math500", {"adapter": "math500", "path": str(path)}).startswith(f"{path}:2: no 'answer'")


@pytest.mark.parametrize("answer, problem", [
    ("search(q=x)", "'answer' is not valid JSON"),
    (json.dumps({"Action": "search", "Action_Input": "{}"}), "'answer' is a JSON object; it must be a JSON list"),
    ("[]", "'answer' is an empty list"),
    (json.dumps([{"Action": "search"}]), "call 1 is not an object with 'Action' and 'Action_Input'"),
    (json.dumps(["search"]), "call 1 is not an object with 'Action' and 'Action_Input'"),
    (json.dumps([{"Action": "search", "Action_Input": "{}"}, {"Action": "get", "Action_Input": "{q: x}"}]),
     "call 2 (get): Action_Input is not valid JSON"),
    (json.dumps([{"Action": "search", "Action_Input": "[1]"}]), "call 1 (search): Action_Input is a JSON list, not an object"),
])
def test_tooluse_gold_answer_must_be_a_list_of_calls(tmp_path, answer, problem):
    path = write_jsonl(tmp_path / "test.jsonl", [{"prompt": "P", "answer": TOOLUSE_ANSWER}, {"prompt": "P", "answer": answer}])
    message = data_error("tooluse", {"adapter": "tooluse", "path": str(tmp_path)})
    assert message.startswith(f"{path}:2: ") and problem in message


def test_gsm8k_answer_without_its_final_number(tmp_path):
    path = write_jsonl(tmp_path / "test.jsonl", [{"question": "Q", "answer": "48 / 2 = 24"}])
    message = data_error("gsm8k", {"adapter": "gsm8k", "path": str(path)})
    assert message.startswith(f"{path}:1: ") and "'#### N'" in message


def test_unreadable_parquet_names_the_file(tmp_path):
    path = tmp_path / "test.parquet"
    path.write_text("not parquet")
    message = data_error("math500", {"adapter": "math500", "path": str(path)})
    assert message.startswith(f"{path}: datasets could not read it: ")


@pytest.mark.parametrize("adapter, key", [("aime", "id"), ("math500", "unique_id"), ("tooluse", "idx"), ("sciknoweval", "idx")])
def test_a_repeated_problem_id_is_refused_when_the_benchmark_is_prepared(tmp_path, adapter, key):
    """Samples and scores are kept per id: two problems under one id once showed 0.250 in the
    comparison and 0.125 in intervals.csv for the same cell. The second row is named, with the first."""
    row = {"aime": {"problem": "P", "answer": "1"}, "math500": {"problem": "P", "answer": "1"},
           "tooluse": {"prompt": "P", "answer": TOOLUSE_ANSWER},
           "sciknoweval": {"prompt": "Q?\n\nA: x\nB: y\nPlease reason step by step.", "answer": "A", "system": "S"}}[adapter]
    path = write_lines(tmp_path / "rows.jsonl", [json.dumps({**row, key: 7}), "", json.dumps({**row, key: 8}),
                                                 json.dumps({**row, key: 7})])  # line 2 is blank
    spec = {"adapter": adapter, "path": str(path), "domain": "physics"}
    assert data_error(adapter, spec) == (f"{path}:4: id '{adapter}-7' repeats the id of {path}:1: every problem needs its "
                                         "own id (samples and scores are kept per id)")
    write_lines(path, [json.dumps({**row, key: 7}), json.dumps({**row, key: 8})])
    assert [r["id"] for r in load_benchmark(adapter, spec, "test", {})] == [f"{adapter}-7", f"{adapter}-8"]
