"""Mechanism metrics (docs/method.md, "Logged per round"): per-token KL and top-1 disagreement and
their token sets (rosd/method/mechanism.py), the path and loss-token statistics of round_stats, the
reflect stage's world annotations, teacher scoring's per-row sums, and mechanism.png."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.image import imread

from rosd.io.files import read_jsonl, read_torch, write_jsonl
from rosd.method.mechanism import METRICS, round_metrics, row_sums, support_kl, top1_disagreement
from rosd.method.prompts import chat_prompt_ids, student_messages
from rosd.method.statistics import round_stats
from rosd.models.loading import load_model, load_tokenizer
from rosd.reporting.plots import MECHANISM_TITLES, mechanism
from rosd.stages.reflect import run_reflect
from rosd.stages.teacher import run_teacher_score, teacher_targets
from rosd.world.first_error import annotate_paths
from rosd.world.paths import path_solution, valid_paths
from rosd.world.tasks import generate

THETA0 = str(Path(__file__).resolve().parent.parent / "rosd" / "world" / "theta0")
TASK = generate("math_paths", "train", 3, 0)[0]
CANONICAL = tuple(range(len(TASK["steps"])))
OTHER_PATH = valid_paths(TASK)[1]  # a valid order that is not the reference's


# --- per token and per row ------------------------------------------------------------------


def test_support_kl_by_hand_on_three_tokens():
    teacher, student = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.25, 0.25, 0.5])
    by_hand = 0.5 * math.log(0.5 / 0.25) + 0.3 * math.log(0.3 / 0.25) + 0.2 * math.log(0.2 / 0.5)
    assert support_kl(teacher.log(), student.log()).item() == pytest.approx(by_hand, rel=1e-6)
    assert support_kl(teacher.log(), teacher.log()).item() == pytest.approx(0.0, abs=1e-7)
    # a direction check: KL(student‖teacher) is another number
    assert support_kl(student.log(), teacher.log()).item() != pytest.approx(by_hand, rel=1e-3)


def test_top1_disagreement_is_one_where_the_teacher_would_write_another_token():
    assert top1_disagreement(torch.tensor([4, 7, 9, 2]), torch.tensor([4, 1, 9, 3])).tolist() == [0.0, 1.0, 0.0, 1.0]


KL, DISAGREE = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
EMPTY = {"kl": 0.0, "top1_disagreement": 0.0, "tokens": 0}


def test_a_wrong_row_splits_at_its_first_error_token():
    sums = row_sums(KL, DISAGREE, correct=False, first_error_token=2)
    assert sums == {
        "prefix": {"kl": 3.0, "top1_disagreement": 1.0, "tokens": 2},
        "from_error": {"kl": 12.0, "top1_disagreement": 2.0, "tokens": 3},
        "correct": EMPTY,
    }


def test_a_correct_row_counts_whole_and_a_wrong_row_off_the_world_nowhere():
    correct = row_sums(KL, DISAGREE, correct=True, first_error_token=None)
    assert correct == {"prefix": EMPTY, "from_error": EMPTY, "correct": {"kl": 15.0, "top1_disagreement": 3.0, "tokens": 5}}
    assert row_sums(KL, DISAGREE, correct=False, first_error_token=None) == {"prefix": EMPTY, "from_error": EMPTY, "correct": EMPTY}


def test_round_metrics_weigh_tokens_and_are_none_without_any():
    wrong = row_sums(KL, DISAGREE, correct=False, first_error_token=2)
    other = row_sums(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.0]), correct=False, first_error_token=2)  # prefix only
    right = row_sums(KL, DISAGREE, correct=True, first_error_token=None)
    metrics = round_metrics([wrong, None, other, right])
    assert metrics["prefix_kl"] == pytest.approx(3.0 / 4)  # 3 nats over 2 + 2 tokens: tokens, not rows
    assert metrics["prefix_top1_disagreement"] == pytest.approx(1.0 / 4)
    assert metrics["from_error_kl"] == pytest.approx(12.0 / 3)
    assert metrics["correct_kl"] == pytest.approx(15.0 / 5)
    assert metrics["correct_top1_disagreement"] == pytest.approx(3.0 / 5)
    assert round_metrics([None, None]) == dict.fromkeys(METRICS)  # no top-k + tail support
    assert round_metrics([]) == dict.fromkeys(METRICS)


# --- round_stats -------------------------------------------------------------------------


def _row(reward, path=None, sibling_path=None, *, kept=True, tokens=10, loss_start=0, distilled=True):
    return {"reward": reward, "in_loss": kept, "distilled": distilled and kept, "response_ids": [0] * tokens,
            "response": "x", "loss_start": loss_start, "task": {"steps": ["a", "b", "c"]},
            "path": path, "sibling_path": sibling_path}  # fmt: skip


def test_path_metrics_pool_the_correct_rollouts_of_the_round():
    rows = [
        _row(1.0, [0, 1, 2], [1, 0, 2]),
        _row(1.0, [0, 1, 2], [0, 1, 2], kept=False),  # a group not kept still counts
        _row(1.0, [1, 0, 2], [0, 1, 2]),
        _row(1.0, [0, 1, 2]),  # no sibling: not in the sibling share
        _row(0.0),  # wrong: no path
    ]
    stats = round_stats(rows)
    assert stats["path_entropy"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert stats["reference_path_share"] == pytest.approx(0.75)
    assert stats["sibling_path_share"] == pytest.approx(1 / 3)


def test_path_metrics_are_zero_on_one_path_and_none_off_the_world():
    one_path = round_stats([_row(1.0, [0, 1, 2], [0, 1, 2]), _row(1.0, [0, 1, 2], [0, 1, 2]), _row(0.0)])
    assert (one_path["path_entropy"], one_path["reference_path_share"], one_path["sibling_path_share"]) == (0.0, 1.0, 1.0)
    off_world = round_stats([_row(1.0), _row(0.0)])
    assert (off_world["path_entropy"], off_world["reference_path_share"], off_world["sibling_path_share"]) == (None, None, None)


def test_loss_token_fractions_by_reward():
    rows = [
        _row(0.0, tokens=10, loss_start=6),  # 4 of 10 tokens carry loss
        _row(0.0, tokens=10, loss_start=0, distilled=False),  # no teacher signal: none
        _row(1.0, tokens=5, loss_start=0),
        _row(1.0, tokens=8, kept=False),  # not kept: not counted
    ]
    stats = round_stats(rows)
    assert stats["loss_token_frac_wrong"] == pytest.approx(4 / 20)
    assert stats["loss_token_frac_correct"] == pytest.approx(1.0)
    assert stats["loss_token_frac"] == pytest.approx(9 / 25)  # the pooled fraction as before
    none_kept = round_stats([_row(1.0, kept=False), _row(0.0, kept=False)])
    assert none_kept["loss_token_frac_wrong"] is None and none_kept["loss_token_frac_correct"] is None


# --- the reflect stage's annotations on a real math_paths task ---------------------------------


def _wrong_response() -> tuple[str, int]:
    """The canonical solution with its fourth line wrong, and that line's character offset."""
    lines = list(TASK["steps"])
    lines[3] = lines[3].rsplit("= ", 1)[0] + "= 99"
    return "\n".join(lines), len("\n".join(lines[:3])) + 1


@pytest.fixture(scope="module")
def reflected(tmp_path_factory) -> list[dict]:
    """One group of four rollouts of TASK through the reflect stage for sdpo (no reflection, no
    engine): correct on a non-canonical path, correct on the canonical one, two wrong."""
    tokenizer = load_tokenizer(THETA0)
    wrong, _ = _wrong_response()
    responses = [(path_solution(TASK, OTHER_PATH), 1.0), (TASK["solution"], 1.0), (wrong, 0.0), ("no steps at all", 0.0)]
    rows = []
    for sample, (text, reward) in enumerate(responses):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        rows.append({"group": 0, "sample": sample, "task": TASK, "prompt_ids": chat_prompt_ids(tokenizer, student_messages(TASK)),
                     "response_ids": ids, "response": text, "reward": reward})  # fmt: skip
    folder = tmp_path_factory.mktemp("reflect")
    write_jsonl(folder / "graded.jsonl", rows)
    settings = {
        "device": "cpu", "dtype": "float32", "enable_thinking": False, "seed": 0, "round": 1,
        "method": {"objective": "distill", "teacher_context": "solution", "mask": "full"},
        "train": {"rollouts_per_prompt": 4, "group_filter": "zero_variance", "skip_no_success": True, "sibling": "first",
                  "teacher_prompt_max_tokens": None},
    }  # fmt: skip
    run_reflect(model=THETA0, graded=str(folder / "graded.jsonl"), out=str(folder / "reflections.jsonl"), settings=settings)
    return read_jsonl(folder / "reflections.jsonl")


def test_a_correct_rollout_gets_its_own_path_and_its_siblings(reflected):
    other, canonical, wrong, garbage = reflected
    assert tuple(other["path"]) == OTHER_PATH != CANONICAL
    assert tuple(canonical["path"]) == CANONICAL
    assert tuple(other["sibling_path"]) == CANONICAL  # its sibling: the first other correct rollout
    assert tuple(canonical["sibling_path"]) == OTHER_PATH
    assert wrong["path"] is None and tuple(wrong["sibling_path"]) == OTHER_PATH
    assert other["first_error_token"] is None


def test_a_wrong_rollouts_first_error_token_is_where_its_wrong_line_starts(reflected):
    tokenizer = load_tokenizer(THETA0)
    wrong = reflected[2]
    _, offset = _wrong_response()
    index = wrong["first_error_token"]
    ids = wrong["response_ids"]
    # the tokens before it decode to the valid lines, the token itself starts the wrong one
    assert len(tokenizer.decode(ids[:index])) <= offset < len(tokenizer.decode(ids[: index + 1]))
    assert tokenizer.decode(ids[index:]).lstrip().startswith(wrong["response"][offset:offset + 5])
    assert reflected[3]["first_error_token"] == 0  # its first line is already wrong


def test_a_right_answer_through_a_wrong_line_follows_no_path():
    tokenizer = load_tokenizer(THETA0)
    lucky, _ = _wrong_response()  # graded right here, as a slip that cancels out would be
    row = {"task": TASK, "reward": 1.0, "response": lucky, "response_ids": tokenizer(lucky)["input_ids"], "sibling": lucky}
    annotate_paths(tokenizer, row, "offsets")
    assert (row["path"], row["sibling_path"]) == (None, None)


def test_rows_off_the_world_get_no_annotation():
    tokenizer = load_tokenizer(THETA0)
    row = {"task": {"steps": []}, "reward": 0.0, "response": "1 + 1 = 3", "response_ids": tokenizer("1 + 1 = 3")["input_ids"], "sibling": "2"}
    annotate_paths(tokenizer, row, "offsets")
    assert (row["path"], row["sibling_path"], row["first_error_token"]) == (None, None, None)


# --- teacher scoring ---------------------------------------------------------------------


def test_teacher_scoring_stores_the_sums_and_a_teacher_on_the_students_prompt_agrees(reflected, tmp_path):
    rows = [dict(r, teacher_prompt_ids=r["prompt_ids"]) for r in reflected]  # teacher = student, same prompt
    model = load_model(THETA0).eval()
    kwargs = dict(topk=5, temperature=1.0, pad_id=0, micro_batch=2, token_chunk=7)
    targets, sums = teacher_targets(model, model, rows, support="topk_tail", **kwargs)
    assert len(targets) == len(sums) == len(rows)
    metrics = round_metrics(sums)
    assert metrics["prefix_kl"] == pytest.approx(0.0, abs=1e-5) and metrics["correct_kl"] == pytest.approx(0.0, abs=1e-5)
    # the prefix's tokens: the wrong rollout's before its first error (the garbage one has none)
    assert sums[2]["prefix"]["tokens"] == rows[2]["first_error_token"] > 0
    assert sums[3]["prefix"]["tokens"] == 0 and sums[3]["from_error"]["tokens"] == len(rows[3]["response_ids"])
    # top-1 disagreement by hand on the correct rollouts: the model's argmax against the sampled ids
    with torch.no_grad():
        logits = [model(torch.tensor([r["prompt_ids"] + r["response_ids"]])).logits[0] for r in rows[:2]]
    by_hand = [(lg[len(r["prompt_ids"]) - 1 : -1].argmax(-1) != torch.tensor(r["response_ids"])).float().mean().item()
               for lg, r in zip(logits, rows[:2])]  # fmt: skip
    lengths = [len(r["response_ids"]) for r in rows[:2]]
    assert metrics["correct_top1_disagreement"] == pytest.approx(np.average(by_hand, weights=lengths), abs=1e-6)
    _, none = teacher_targets(model, model, rows, support="sampled_token", **kwargs)
    assert none == [None] * len(rows)


def test_the_teacher_file_holds_the_mechanism_beside_the_targets(reflected, tmp_path):
    reflections = tmp_path / "reflections.jsonl"
    write_jsonl(reflections, [dict(r, teacher_prompt_ids=r["prompt_ids"]) for r in reflected])
    settings = {"device": "cpu", "dtype": "float32", "seed": 0, "round": 1,
                "method": {"objective": "distill", "teacher": "frozen", "loss": {"support": "topk_tail", "topk": 5}},
                "train": {"temperature": 1.0, "micro_batch": 2, "token_chunk": 7}}  # fmt: skip
    run_teacher_score(teacher=THETA0, student=THETA0, reflections=str(reflections), out=str(tmp_path / "teacher.pt"), settings=settings)
    saved = read_torch(tmp_path / "teacher.pt")
    distilled = sum(r["distilled"] for r in reflected)
    assert len(saved["targets"]) == len(saved["mechanism"]) == distilled == 4
    assert saved["mechanism"][0]["correct"]["tokens"] == len(reflected[0]["response_ids"])


# --- the plot ------------------------------------------------------------------------------


def _drawn_share(path: Path) -> float:
    pixels = imread(path)[..., :3]
    return float(np.any(pixels != pixels[0, 0], axis=-1).mean())


def test_mechanism_plot_has_a_panel_per_metric_with_data(tmp_path):
    rounds = pd.DataFrame([
        {"method": m, "target": "math_paths", "seed": s, "round": r, **{k: 0.1 * r + 0.05 * s + (m == "sdpo") * 0.2 for k in MECHANISM_TITLES}}
        for m in ("rosd", "sdpo") for s in (0, 1) for r in (1, 2, 3)
    ])  # fmt: skip
    with_data = mechanism(rounds, tmp_path / "mechanism.png")
    empty = mechanism(rounds.assign(**dict.fromkeys(MECHANISM_TITLES)), tmp_path / "empty.png")
    assert with_data.exists() and empty.exists()
    # curves and their bands draw far more than seven "no data" panels do
    assert _drawn_share(with_data) > 2 * _drawn_share(empty)
