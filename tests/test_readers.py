"""The stages check what they read (issue 25, "readers that check what they read"): a hand-edited or
broken intermediate file, a benchmark with a repeated id, a prompt the model's positions cannot
hold, a model whose embedding does not cover its tokenizer, and a truncated model file are each
refused by the `rosd` command as ONE line naming the file (and line) with exit 2, no traceback and
no output written; the good files of each case still run.

Every case runs in process (rosd.cli.main) on files built in tmp_path, with the shipped θ0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from one_line import refused_in_one_line
from snakemake.utils import validate
from tiny_model import small_model_dir

from rosd import cli
from rosd.io.files import read_jsonl, write_jsonl
from rosd.jobs.registry import stage_settings
from rosd.method.presets import resolve
from rosd.method.prompts import chat_prompt_ids, student_messages
from rosd.models.loading import load_tokenizer
from rosd.world.tasks import generate

REPO = Path(__file__).resolve().parent.parent
GROUPS, GROUP_SIZE = 2, 4
RERUN = "rerun the job that wrote it: snakemake --cores all --forcerun"


def _config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))  # the schema's defaults
    config["evaluation"].update(samples=1, max_new_tokens=4)
    config["train"].update(batch_prompts=GROUPS, rollouts_per_prompt=GROUP_SIZE, max_new_tokens=4)
    return config


@pytest.fixture(autouse=True)
def _no_progress_bars():
    """transformers draws a progress bar on stderr while it loads weights (a run's log holds it):
    the checks below count the lines that say what went wrong."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    yield
    transformers_logging.enable_progress_bar()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return small_model_dir(tmp_path_factory)


# World multiple-choice tasks: graded without math-verify's worker processes (the fast lane starts none).
TASKS = generate("mcq", "test", 3, seed=0)
WRONG = "<reasoning>\nA guess.\n</reasoning>\n<answer>\nZ\n</answer>"


def _task(i: int, prompt: str | None = None) -> dict:
    return {**TASKS[i], "id": f"mcq-{i}", **({"prompt": prompt} if prompt else {})}


def _graded_rows(model_dir: Path) -> list[dict]:
    """Two groups of four rollouts as grade writes them: one correct answer in group 0, none in 1."""
    tokenizer = load_tokenizer(str(model_dir))
    rows = []
    for group in range(GROUPS):
        task = _task(group)
        for sample in range(GROUP_SIZE):
            correct = group == 0 and sample == 0
            text = task["solution"] if correct else WRONG
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            rows.append({"step": 0, "group": group, "sample": sample, "task": task,
                         "prompt_ids": chat_prompt_ids(tokenizer, student_messages(task)), "response_ids": ids,
                         "response": text, "sampler_logps": [-1.0] * len(ids), "reward": float(correct)})
    return rows


def _reflect(model_dir: Path, graded: Path, group_size: int = GROUP_SIZE) -> list[str]:
    settings = stage_settings("reflect", _config(), resolve(_config(), "sdpo"), seed=0, round=1)
    settings["train"]["rollouts_per_prompt"] = group_size
    return ["reflect", "--model", str(model_dir), "--graded", str(graded), "--out", str(graded.parent / "reflections.jsonl"),
            "--settings", json.dumps(settings)]


def _edit(rows: list[dict], case: str) -> list[dict]:
    """The graded rows with one hand edit (row 2 is group 0 sample 2, on line 3)."""
    rows = [dict(row) for row in rows]
    if case == "reward 7":
        rows[2]["reward"] = 7
    elif case == 'reward "yes"':
        rows[2]["reward"] = "yes"
    elif case == "reward true":
        rows[2]["reward"] = True
    elif case == "reward null":
        rows[2]["reward"] = None
    elif case == "group a string":
        rows[2]["group"] = "0"
    elif case == "no response":
        del rows[2]["response"]
    elif case == "a row repeated":
        rows.insert(3, rows[2])
    elif case == "a row missing":
        del rows[5]  # group 1 sample 1
    return rows


# case -> the line after "rosd reflect: error: {graded}", without the rerun advice
GRADED_CASES = {
    "reward 7": ":3: reward 7 is not 0 or 1",
    'reward "yes"': ':3: reward "yes" is not 0 or 1',
    "reward true": ":3: reward true is not 0 or 1",
    "reward null": ":3: reward null is not 0 or 1",
    "group a string": ':3: group "0" is not a count (0, 1, ...)',
    "no response": ":3: not a rollout row (it needs group, sample, task, prompt_ids, response_ids, response, reward)",
    "a row repeated": ":4: group 0 sample 2 repeats line 3",
    "a row missing": ":5: group 1 has 3 rollouts, not 4 (train.rollouts_per_prompt)",
}


@pytest.mark.parametrize("case", list(GRADED_CASES))
def test_a_hand_edited_graded_file_is_refused_by_reflect(case, model_dir, tmp_path, capsys):
    graded = tmp_path / "graded.jsonl"
    write_jsonl(graded, _edit(_graded_rows(model_dir), case))
    line = refused_in_one_line(_reflect(model_dir, graded), capsys, tmp_path)
    assert line == f"rosd reflect: error: {graded}{GRADED_CASES[case]}; {RERUN} {graded}"


def test_the_graded_file_as_grade_wrote_it_is_reflected(model_dir, tmp_path):
    graded = tmp_path / "graded.jsonl"
    write_jsonl(graded, _graded_rows(model_dir))
    cli.main(_reflect(model_dir, graded))
    rows = read_jsonl(tmp_path / "reflections.jsonl")
    assert len(rows) == GROUPS * GROUP_SIZE
    assert [row["in_loss"] for row in rows] == [True] * GROUP_SIZE + [False] * GROUP_SIZE  # group 1 has no success


def test_a_group_of_another_size_than_the_setting_isrefused_in_one_line(model_dir, tmp_path, capsys):
    graded = tmp_path / "graded.jsonl"
    write_jsonl(graded, _graded_rows(model_dir))
    line = refused_in_one_line(_reflect(model_dir, graded, group_size=8), capsys, tmp_path)
    assert line == f"rosd reflect: error: {graded}:1: group 0 has 4 rollouts, not 8 (train.rollouts_per_prompt); {RERUN} {graded}"


def _grade(rollouts: Path) -> list[str]:
    settings = stage_settings("grade", _config(), resolve(_config(), "sdpo"))
    return ["grade", "--rollouts", str(rollouts), "--out", str(rollouts.parent / "graded.jsonl"), "--settings", json.dumps(settings)]


def test_a_rollouts_file_missing_a_row_is_refused_by_grade(model_dir, tmp_path, capsys):
    rollouts = tmp_path / "rollouts.jsonl"
    rows = [{k: v for k, v in row.items() if k != "reward"} for row in _graded_rows(model_dir)]
    write_jsonl(rollouts, rows[:1] + rows[2:])  # group 0 sample 1 gone
    line = refused_in_one_line(_grade(rollouts), capsys, tmp_path)
    assert line == f"rosd grade: error: {rollouts}:1: group 0 has 3 rollouts, not 4 (train.rollouts_per_prompt); {RERUN} {rollouts}"
    write_jsonl(rollouts, rows)
    cli.main(_grade(rollouts))
    assert [row["reward"] for row in read_jsonl(tmp_path / "graded.jsonl")] == [row["reward"] for row in _graded_rows(model_dir)]


# --- the data a checkpoint is evaluated on, and the model it loads ---

def _evaluate(model: Path, data: Path) -> list[str]:
    settings = stage_settings("evaluate", _config(), seed=0, round=0, method="base", target="mcq", benchmark="mcq")
    return ["evaluate", "--model", str(model), "--data", str(data), "--out-samples", str(data.parent / "out" / "s.jsonl"),
            "--out-summary", str(data.parent / "out" / "s.json"), "--settings", json.dumps(settings)]


def _rollouts(model: Path, data: Path) -> list[str]:
    settings = stage_settings("rollouts", _config(), resolve(_config(), "sdpo"), seed=0, round=1)
    return ["rollouts", "--model", str(model), "--data", str(data), "--out", str(data.parent / "out" / "rollouts.jsonl"),
            "--settings", json.dumps(settings)]


def _model_copy(model_dir: Path, root: Path, **config) -> Path:
    """θ0's files, linked, with its config.json rewritten with ``config``'s values."""
    copy = root / "model"
    copy.mkdir()
    for source in model_dir.iterdir():
        (copy / source.name).symlink_to(source)
    (copy / "config.json").unlink()
    (copy / "config.json").write_text(json.dumps({**json.loads((model_dir / "config.json").read_text()), **config}))
    return copy


def test_a_benchmark_with_a_repeated_id_is_refused_by_evaluate(model_dir, tmp_path, capsys):
    data = tmp_path / "mcq.jsonl"
    write_jsonl(data, [_task(0), _task(1), {**_task(2), "id": "mcq-1"}])
    line = refused_in_one_line(_evaluate(model_dir, data), capsys, tmp_path)
    assert line == (f"rosd evaluate: error: {data}:3: id 'mcq-1' repeats line 2's: every problem needs its own id "
                    "(samples and scores are kept per id)")
    write_jsonl(data, [_task(0), _task(1), _task(2)])
    cli.main(_evaluate(model_dir, data))
    assert [row["id"] for row in read_jsonl(tmp_path / "out" / "s.jsonl")] == ["mcq-0", "mcq-1", "mcq-2"]


def test_a_data_row_that_is_not_a_task_isrefused_in_one_line(model_dir, tmp_path, capsys):
    data = tmp_path / "mcq.jsonl"
    write_jsonl(data, [_task(0), {"id": "mcq-1", "prompt": "P"}])
    line = refused_in_one_line(_evaluate(model_dir, data), capsys, tmp_path)
    assert line == f"rosd evaluate: error: {data}:2: a task without kind, answer (a task needs id, kind, prompt, answer)"


@pytest.mark.parametrize("stage", ["evaluate", "rollouts"])
def test_a_prompt_past_the_models_positions_is_refused_before_generation(stage, model_dir, tmp_path, capsys):
    """A 5 MB row once made evaluation allocate ~10 GB; the same row, scaled down to a model whose
    positions hold the short prompt and its 4 new tokens exactly, is one line naming its line and
    the settings that make it fit."""
    long_task = _task(1, "Which option equals " + " + ".join(["1"] * 40) + "?\n\nA: 40\nB: 41")
    tokenizer = load_tokenizer(str(model_dir))
    short, long = (len(chat_prompt_ids(tokenizer, student_messages(task))) for task in (_task(0), long_task))
    model = _model_copy(model_dir, tmp_path, max_position_embeddings=short + 4)
    data = tmp_path / "mcq.jsonl"
    write_jsonl(data, [_task(0), long_task])
    setting = {"evaluate": "evaluation", "rollouts": "train"}[stage] + ".max_new_tokens"
    line = refused_in_one_line((_evaluate if stage == "evaluate" else _rollouts)(model, data), capsys, tmp_path)
    assert line == (f"rosd {stage}: error: {data}:2: its prompt is {long} tokens, and {setting}=4 more pass the model's "
                    f"max_position_embeddings={short + 4} ({model}/config.json): shorten the prompt, or drop such prompts "
                    "with data.max_prompt_tokens")


def test_a_model_whose_embedding_is_smaller_than_its_tokenizer_isrefused_in_one_line(model_dir, tmp_path, capsys):
    model = _model_copy(model_dir, tmp_path, vocab_size=500)
    data = tmp_path / "mcq.jsonl"
    write_jsonl(data, [_task(0)])
    line = refused_in_one_line(_evaluate(model, data), capsys, tmp_path)
    size = len(load_tokenizer(str(model_dir)))
    assert line == (f"rosd evaluate: error: {model}/config.json: vocab_size 500 (the input embedding's rows) is smaller than "
                    f"its tokenizer's {size} tokens: ids from 500 on have no embedding; give a tokenizer and a model that "
                    "belong together")


def _damage(model: Path, name: str, keep: float) -> Path:
    """Replace the link ``model/name`` with a copy of the first ``keep`` of its bytes."""
    target = model / name
    data = target.read_bytes()
    target.unlink()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


# file, fraction kept -> the problem the line names
DAMAGED = {
    ("model.safetensors", 0.5): "truncated or corrupted (Error while deserializing header: incomplete metadata, file not fully covered)",
    ("model.safetensors", 0.0): "truncated or corrupted (Error while deserializing header: header too small)",
    ("config.json", 0.5): "not valid JSON, truncated or corrupted",
    ("tokenizer.json", 0.5): "not valid JSON, truncated or corrupted",
}


@pytest.mark.parametrize("name, keep", list(DAMAGED))
def test_a_truncated_model_file_is_one_line_naming_it(name, keep, model_dir, tmp_path, capsys):
    model = _model_copy(model_dir, tmp_path)
    damaged = _damage(model, name, keep)
    data = tmp_path / "mcq.jsonl"
    write_jsonl(data, [_task(0)])
    line = refused_in_one_line(_evaluate(model, data), capsys, tmp_path)
    assert line.startswith(f"rosd evaluate: error: {damaged}: {DAMAGED[name, keep]}")
    assert line.endswith(f"; {RERUN} {model}")


def test_an_intact_model_copy_still_evaluates(model_dir, tmp_path):
    model = _model_copy(model_dir, tmp_path)
    data = tmp_path / "mcq.jsonl"
    write_jsonl(data, [_task(0)])
    cli.main(_evaluate(model, data))
    assert json.loads((tmp_path / "out" / "s.json").read_text())["benchmark"] == "mcq"
