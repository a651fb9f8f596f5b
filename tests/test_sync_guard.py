"""The weight-sync guard (rosd/method/sync_guard.py): the sampler's log-probs against the trainer's
on the round's first update, recorded per round, a warning (or one-line stop) above the limit."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from test_training import files, rounds, settings, theta0  # noqa: F401  (fixtures)

from rosd.engines.hf import HFEngine
from rosd.io.files import read_jsonl, write_jsonl
from rosd.method.sync_guard import gap_sums, summary, verdict
from rosd.stages.distill import run_distill
from rosd.stages.teacher import run_teacher_score


def test_gap_sums_and_summary_by_hand():
    """Δ = trainer − sampler = [0.5, 0, −1]: Σ|Δ| 1.5, max 1, Σ exp(Δ) = e^0.5 + 1 + e^−1 over 3 tokens."""
    sums = gap_sums(torch.tensor([-1.0, -2.0, -4.0]), torch.tensor([-1.5, -2.0, -3.0]))
    assert sums[0] == pytest.approx(1.5) and sums[1] == pytest.approx(1.0) and sums[3] == 3
    assert sums[2] == pytest.approx(math.exp(0.5) + 1 + math.exp(-1))
    columns = summary(*sums)
    assert columns == {"sampler_gap_mean": pytest.approx(0.5), "sampler_gap_max": pytest.approx(1.0),
                       "sampler_ratio_mean": pytest.approx((math.exp(0.5) + 1 + math.exp(-1)) / 3)}
    assert gap_sums(torch.tensor([]), torch.tensor([])) == (0.0, 0.0, 0.0, 0)
    assert summary(0.0, 0.0, 0.0, 0) == {"sampler_gap_mean": None, "sampler_gap_max": None, "sampler_ratio_mean": None}


def test_verdict_trips_above_the_limit_only():
    columns = {"sampler_gap_mean": 0.5, "sampler_gap_max": 1.0, "sampler_ratio_mean": 1.1}
    line = verdict(columns, 0.4)
    assert line is not None and "\n" not in line and "0.5 nats" in line and "train.sampler_gap_limit=0.4" in line
    assert verdict(columns, 0.5) is None and verdict(columns, None) is None
    assert verdict({**columns, "sampler_gap_mean": None}, 0.4) is None  # no token compared
    assert verdict({**columns, "sampler_gap_mean": float("nan")}, 0.4) is not None


@pytest.fixture(scope="module")
def sampled(theta0, files, tmp_path_factory):  # noqa: F811
    """Four responses θ0's HF engine sampled (with the log-probs it recorded) and θ0's teacher scores."""
    template = read_jsonl(files[0])[0]
    engine = HFEngine(theta0)
    samples = engine.generate([template["prompt_ids"]], n=4, temperature=1.0, top_p=1.0, max_new_tokens=24, seed=0)[0]
    rows = [{**template, "sample": i, "response_ids": s.ids, "response": s.text, "sampler_logps": s.logps, "loss_start": 0}
            for i, s in enumerate(samples)]
    folder = tmp_path_factory.mktemp("guard")
    write_jsonl(folder / "reflections.jsonl", rows)
    run_teacher_score(teacher=theta0, student=theta0, reflections=str(folder / "reflections.jsonl"),
                      out=str(folder / "teacher.pt"), settings=settings())
    return folder / "reflections.jsonl", folder / "teacher.pt"


def distill_from(model, sampled, out, **train) -> dict:
    run_distill(model=str(model), reflections=str(sampled[0]), teacher_scores=str(sampled[1]), out_model=str(out / "ckpt"),
                out_metrics=str(out / "metrics.json"), settings=settings(**train))
    return json.loads((out / "metrics.json").read_text())


def test_an_engine_on_the_trained_weights_passes(theta0, sampled, tmp_path, caplog):  # noqa: F811
    """The engine sampled from θ0 and the round trains θ0: the gap is float noise, nothing is said."""
    with caplog.at_level(logging.WARNING, logger="rosd.stages.distill"):
        metrics = distill_from(theta0, sampled, tmp_path, sampler_gap_limit=0.1)
    assert metrics["sampler_gap_mean"] < 1e-4 and metrics["sampler_gap_max"] < 1e-3
    assert metrics["sampler_ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert "sampler_gap_limit" not in caplog.text


def test_an_engine_left_on_old_weights_trips_the_guard(theta0, files, sampled, tmp_path, caplog):  # noqa: F811
    """The engine sampled from θ0, but the trainer starts from weights two rounds of training moved:
    the gap passes the limit, which warns, or stops the job in one line under sampler_gap_error."""
    moved = rounds(theta0, files, tmp_path / "moved", 2, lr=1e-2, warmup_steps=0)
    with caplog.at_level(logging.WARNING, logger="rosd.stages.distill"):
        metrics = distill_from(moved, sampled, tmp_path / "warned", sampler_gap_limit=0.1)
    assert metrics["sampler_gap_mean"] > 0.1 and metrics["sampler_ratio_mean"] != pytest.approx(1.0, abs=1e-2)
    assert "not sampled from the weights being trained" in caplog.text
    with pytest.raises(SystemExit, match=r"^the sampler's log-probs differ .* train.sampler_gap_limit=0.1\)"):
        distill_from(moved, sampled, tmp_path / "stopped", sampler_gap_limit=0.1, sampler_gap_error=True)
    assert not (tmp_path / "stopped" / "ckpt").exists()
    assert distill_from(moved, sampled, tmp_path / "unchecked", sampler_gap_limit=None)["sampler_gap_mean"] > 0.1
