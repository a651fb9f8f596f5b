"""data.max_prompt_tokens (ref data.filter_overlong_prompts, max_prompt_length): train prompts and
evaluation tasks whose chat-templated student prompt is too long are dropped by one helper,
rosd.stages.data.drop_overlong_prompts, and counted only when the filter is set."""

from __future__ import annotations

import json

import pytest
from tiny_model import small_model_dir

from rosd.io.files import read_jsonl, write_jsonl
from rosd.method.prompts import chat_prompt_ids, student_messages
from rosd.models.loading import load_tokenizer
from rosd.stages.data import drop_overlong_prompts
from rosd.stages.evaluate import run_evaluate
from rosd.stages.rollouts import run_rollouts


def _task(i: int, words: int) -> dict:
    return {"id": i, "domain": "math", "kind": "math", "system": "Put the final answer in \\boxed{}.",
            "prompt": "Compute " + " + ".join(["1"] * words) + ".", "answer": str(words), "solution": None, "steps": []}


TASKS = [_task(0, 2), _task(1, 30), _task(2, 3), _task(3, 60)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return str(small_model_dir(tmp_path_factory))


@pytest.fixture(scope="module")
def lengths(model_dir) -> list[int]:
    tokenizer = load_tokenizer(model_dir)
    return [len(chat_prompt_ids(tokenizer, student_messages(t), False)) for t in TASKS]


def test_prompts_longer_than_the_limit_are_dropped(model_dir, lengths):
    tokenizer = load_tokenizer(model_dir)
    assert lengths[0] < lengths[2] < lengths[1] < lengths[3]
    settings = {"enable_thinking": False, "data": {"max_prompt_tokens": lengths[1]}}
    kept, dropped = drop_overlong_prompts(tokenizer, TASKS, settings, what="test")
    assert [t["id"] for t in kept] == [0, 1, 2] and dropped == 1  # a prompt of exactly the limit stays (ref: <=)
    settings["data"]["max_prompt_tokens"] = lengths[1] - 1
    kept, dropped = drop_overlong_prompts(tokenizer, TASKS, settings, what="test")
    assert [t["id"] for t in kept] == [0, 2] and dropped == 2


@pytest.mark.parametrize("settings", [{}, {"data": {}}, {"data": {"max_prompt_tokens": None}}])
def test_no_limit_keeps_every_task_untouched(settings):
    kept, dropped = drop_overlong_prompts(None, TASKS, settings, what="test")  # no tokenizer needed
    assert kept is TASKS and dropped == 0


def _stage_settings(model_dir, limit) -> dict:
    settings = {
        "device": "cpu", "dtype": "float32", "enable_thinking": False, "seed": 0, "round": 1,
        "generation": {"backend": "hf", "batch_size": 8, "tensor_parallel_size": 1},
        "train": {"batch_prompts": 2, "rollouts_per_prompt": 2, "steps_per_round": 1, "temperature": 1.0, "top_p": 1.0,
                  "top_k": None, "max_new_tokens": 4},
        "evaluation": {"samples": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 4},
        "grading": {"mode": "reference"}, "method": "base", "target": "math", "benchmark": "math",
    }
    if limit != "absent":
        settings["data"] = {"max_prompt_tokens": limit}
    return settings


@pytest.mark.parametrize("limit", ["absent", None])
def test_without_the_filter_the_stages_write_no_new_keys(model_dir, tmp_path, limit):
    write_jsonl(tmp_path / "tasks.jsonl", TASKS)
    settings = _stage_settings(model_dir, limit)
    run_rollouts(model=model_dir, data=str(tmp_path / "tasks.jsonl"), out=str(tmp_path / "rollouts.jsonl"), settings=settings)
    assert all("train_prompts_dropped" not in row for row in read_jsonl(tmp_path / "rollouts.jsonl"))
    run_evaluate(model=model_dir, data=str(tmp_path / "tasks.jsonl"), out_samples=str(tmp_path / "samples.jsonl"),
                 out_summary=str(tmp_path / "summary.json"), settings=settings)
    assert "prompts_dropped" not in json.loads((tmp_path / "summary.json").read_text())
    assert {r["id"] for r in read_jsonl(tmp_path / "samples.jsonl")} == {0, 1, 2, 3}


def test_the_filter_drops_train_prompts_and_evaluation_tasks(model_dir, lengths, tmp_path):
    write_jsonl(tmp_path / "tasks.jsonl", TASKS)
    settings = _stage_settings(model_dir, lengths[2])  # tasks 0 and 2 fit
    settings["train"]["batch_prompts"] = 4  # one round walks past both kept prompts
    run_rollouts(model=model_dir, data=str(tmp_path / "tasks.jsonl"), out=str(tmp_path / "rollouts.jsonl"), settings=settings)
    rows = read_jsonl(tmp_path / "rollouts.jsonl")
    assert {row["task"]["id"] for row in rows} == {0, 2}
    assert all(row["train_prompts_dropped"] == 2 for row in rows)
    run_evaluate(model=model_dir, data=str(tmp_path / "tasks.jsonl"), out_samples=str(tmp_path / "samples.jsonl"),
                 out_summary=str(tmp_path / "summary.json"), settings=settings)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["prompts_dropped"] == 2
    assert {r["id"] for r in read_jsonl(tmp_path / "samples.jsonl")} == {0, 2}


def test_a_split_with_no_prompt_short_enough_is_one_clear_error(model_dir, tmp_path):
    write_jsonl(tmp_path / "tasks.jsonl", TASKS)
    with pytest.raises(SystemExit, match="every train prompt is longer than data.max_prompt_tokens=1"):
        run_rollouts(model=model_dir, data=str(tmp_path / "tasks.jsonl"), out=str(tmp_path / "rollouts.jsonl"),
                     settings=_stage_settings(model_dir, 1))
