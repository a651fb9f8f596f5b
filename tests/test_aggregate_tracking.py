"""rosd.reporting.aggregate tables and rosd.reporting.tracking MLflow ingestion on a small experiment tree.

Fixture: methods rosd and sdpo trained on target "math", seeds 0 and 1, rounds 1 and 2, each
checkpoint evaluated on "math" (in-domain) and "mcq" (out-of-domain); base (θ0) per seed.
Each evaluation has 4 problems x 2 samples, so mean@2 = (correct samples) / 8.
"""

import json
import shutil

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from rosd.evaluation.metrics import summarize
from rosd.reporting.aggregate import collect, write_tables
from rosd.reporting.tracking import compare_table, format_markdown, ingest, tracking_uri

FINAL = 2
# correct samples out of 8 at the final round, per (method, seed, benchmark)
FINAL_CORRECT = {
    ("rosd", 0, "math"): 6, ("rosd", 1, "math"): 4,  # 0.625 ± 0.177
    ("rosd", 0, "mcq"): 2, ("rosd", 1, "mcq"): 2,  # 0.250 ± 0.000
    ("sdpo", 0, "math"): 3, ("sdpo", 1, "math"): 5,  # 0.500 ± 0.177
    ("sdpo", 0, "mcq"): 1, ("sdpo", 1, "mcq"): 3,  # 0.250 ± 0.177
}  # fmt: skip
BASE_CORRECT = {"math": 2, "mcq": 1}  # 0.250 and 0.125 on both seeds
CONFIG = {"model": {"hidden": 128, "layers": 4}, "methods": ["rosd", "sdpo"], "notes": "x" * 7000}


def _write(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(payload)


def _evaluation(exp, method, target, seed, rnd, benchmark, n_correct):
    flags = [1] * n_correct + [0] * (8 - n_correct)
    records = [
        {"id": f"p{i // 2}", "sample": i % 2, "correct": c, "response": "..."}
        for i, c in enumerate(flags)
    ]
    base = exp / "eval" / method / target / f"seed{seed}" / f"round{rnd}"
    _write(base / f"{benchmark}.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    summary = {
        **summarize(records, k=2),
        "method": method, "target": target, "seed": seed, "round": rnd,
        "benchmark": benchmark, "in_domain": benchmark == target,
    }  # fmt: skip
    _write(base / f"{benchmark}.json", json.dumps(summary))


def _round_metrics(method, seed, rnd):
    return {
        "method": method, "target": "math", "seed": seed, "round": rnd, "step": 3 * rnd,
        "loss": 1.0 / rnd + seed, "grad_norm": 0.5, "rollout_accuracy": 0.1 * rnd,
        "kept_group_frac": 0.5, "reflection_parse_rate": 0.5 + 0.1 * rnd,
        "quote_found_rate": 0.2 * rnd if method == "rosd" else None,
        "quote_start_frac": 0.4 if method == "rosd" else None,
        "loss_token_frac": 0.6 if method == "rosd" else 1.0,
        "first_error_hit_rate": 0.25 * seed if method == "rosd" else None,
        "n_rollouts": 16, "seconds": 1.5,
        "quote_line_offsets": {"-1": rnd, "0": seed + 1} if method == "rosd" else {},
    }  # fmt: skip


def make_experiment(exp):
    for seed in (0, 1):
        for benchmark, n_correct in BASE_CORRECT.items():
            _evaluation(exp, "base", "all", seed, 0, benchmark, n_correct)
        for method in ("rosd", "sdpo"):
            for rnd in (1, FINAL):
                run_dir = exp / "runs" / method / "math" / f"seed{seed}" / f"round{rnd}"
                _write(run_dir / "metrics.json", json.dumps(_round_metrics(method, seed, rnd)))
                for benchmark in ("math", "mcq"):
                    # round 1 is all wrong, so any leak of it into the final table shows
                    n_correct = FINAL_CORRECT[method, seed, benchmark] if rnd == FINAL else 0
                    _evaluation(exp, method, "math", seed, rnd, benchmark, n_correct)
    return exp


@pytest.fixture
def exp(tmp_path):
    return make_experiment(tmp_path / "results" / "demo")


def test_collect_reads_every_file(exp):
    rounds, evals = collect(exp)
    assert len(rounds) == 2 * 2 * 2
    assert len(evals) == 2 * 2 + 2 * 2 * 2 * 2
    identity = ["method", "target", "seed", "round"]
    assert rounds[identity].equals(rounds[identity].sort_values(identity, ignore_index=True))
    assert rounds["first_error_hit_rate"].isna().sum() == 4  # sdpo's nulls read as missing
    row = evals[(evals["method"] == "rosd") & (evals["seed"] == 0) & (evals["round"] == FINAL)]
    assert dict(zip(row["benchmark"], row["mean_at_k"], strict=True)) == {"math": 0.75, "mcq": 0.25}
    assert row.set_index("benchmark")["in_domain"].to_dict() == {"math": True, "mcq": False}


def test_collect_recomputes_a_missing_summary(exp):
    summary = exp / "eval" / "rosd" / "math" / "seed0" / f"round{FINAL}" / "math.json"
    summary.unlink()
    _, evals = collect(exp)
    row = evals[(evals["method"] == "rosd") & (evals["seed"] == 0) & (evals["round"] == FINAL)]
    assert row.set_index("benchmark").loc["math", "mean_at_k"] == 0.75


def test_write_tables_comparison_and_localization(exp, tmp_path):
    out = tmp_path / "tables"
    written = write_tables(exp, out)
    assert sorted(p.name for p in written) == sorted(
        ["rounds.csv", "evals.csv", "comparison.csv", "localization.csv", "intervals.csv", "paired.csv",
         "quote_offsets.csv", "comparison.md"]
    )  # fmt: skip
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    comparison = pd.read_csv(out / "comparison.csv", dtype=str, keep_default_na=False)
    assert list(comparison.columns) == [
        "method", "target", "round", "seeds", "math (ID)", "mcq (OOD)"
    ]  # fmt: skip
    rows = {r["method"]: r for r in comparison.to_dict("records")}
    assert list(rows) == ["base", "rosd", "sdpo"]  # base first
    assert rows["base"] == {
        "method": "base", "target": "all", "round": "0", "seeds": "2",
        "math (ID)": "0.250 ± 0.000", "mcq (OOD)": "0.125 ± 0.000",
    }  # fmt: skip
    assert rows["rosd"]["round"] == str(FINAL)
    cells = {m: (rows[m]["math (ID)"], rows[m]["mcq (OOD)"]) for m in ("rosd", "sdpo")}
    assert cells == {
        "rosd": ("0.625 ± 0.177", "0.250 ± 0.000"),
        "sdpo": ("0.500 ± 0.177", "0.250 ± 0.177"),
    }

    localization = pd.read_csv(out / "localization.csv").set_index("method")
    assert localization.loc["rosd", "quote_found_rate"] == pytest.approx((0.2 + 0.4) / 2)
    assert localization.loc["rosd", "first_error_hit_rate"] == pytest.approx(0.125)
    assert localization.loc["rosd", "reflection_parse_rate"] == pytest.approx(0.65)
    assert pd.isna(localization.loc["sdpo", "quote_start_frac"])  # all null: no mask, no quote
    assert localization.loc["sdpo", "loss_token_frac"] == 1.0

    # rosd's histograms summed over rounds 1 and FINAL and seeds 0 and 1; sdpo quotes nothing
    offsets = pd.read_csv(out / "quote_offsets.csv")
    assert offsets.to_dict("records") == [
        {"method": "rosd", "target": "math", "offset": -1, "count": 2 * (1 + FINAL)},
        {"method": "rosd", "target": "math", "offset": 0, "count": 2 * (1 + 2)},
    ]
    assert "quote_line_offsets" not in pd.read_csv(out / "rounds.csv").columns

    markdown = (out / "comparison.md").read_text()
    assert "| rosd   | math   | 2     | 2     | 0.625 ± 0.177 | 0.250 ± 0.000 |" in markdown
    assert "## Localization" in markdown and "mean@2" in markdown

    # the same cells with their intervals (rosd/evaluation/intervals.py), over the 4 problems and 2 seeds
    intervals = pd.read_csv(out / "intervals.csv").set_index(["method", "benchmark"])
    assert intervals.loc[("rosd", "math"), ["mean", "seeds", "problems"]].tolist() == [0.625, 2, 4]
    assert intervals.loc[("base", "mcq"), "mean"] == 0.125
    assert (intervals["low"] <= intervals["mean"]).all() and (intervals["mean"] <= intervals["high"]).all()
    # base's 2 correct math samples are problem p0's, on both seeds: scores [1, 0, 0, 0]. A resample
    # holds p0 K ~ Binomial(4, 1/4) times, mean K/4: P(K = 0) = 0.32, P(K >= 3) = 0.051 > 0.025
    assert intervals.loc[("base", "math"), ["low", "high"]].tolist() == [0.0, 0.75]
    paired = pd.read_csv(out / "paired.csv").set_index(["method", "baseline", "benchmark"])
    assert sorted(set(paired.index.droplevel("benchmark"))) == [("rosd", "base"), ("rosd", "sdpo"), ("sdpo", "base")]
    assert paired.loc[("rosd", "sdpo", "math"), "difference"] == pytest.approx(0.625 - 0.5)
    assert paired.loc[("rosd", "base", "math"), "difference"] == pytest.approx(0.625 - 0.25)
    assert "| rosd   | sdpo     | math   | +0.125 [" in markdown


def test_comparison_single_seed_and_second_target(exp, tmp_path):
    # one seed of rosd trained on mcq: its in-domain column is mcq, its std is not shown
    metrics = {**_round_metrics("rosd", 0, 1), "target": "mcq"}
    _write(exp / "runs/rosd/mcq/seed0/round1/metrics.json", json.dumps(metrics))
    _evaluation(exp, "rosd", "mcq", 0, 1, "mcq", 7)
    _evaluation(exp, "rosd", "mcq", 0, 1, "math", 1)
    write_tables(exp, tmp_path / "tables")
    csv = tmp_path / "tables" / "comparison.csv"
    comparison = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert list(comparison.columns)[4:] == ["math (ID)", "mcq (ID)", "math (OOD)", "mcq (OOD)"]
    row = comparison[(comparison["method"] == "rosd") & (comparison["target"] == "mcq")].iloc[0]
    assert row["seeds"] == "1"
    assert (row["mcq (ID)"], row["math (OOD)"], row["math (ID)"]) == ("0.875", "0.125", "")
    base = comparison[comparison["method"] == "base"].iloc[0]
    assert base["math (ID)"] == base["math (OOD)"] == "0.250 ± 0.000"


def test_compare_prints_the_intervals_of_the_chosen_methods(exp):
    from rosd.reporting.compare import interval_sections

    write_tables(exp, exp / "tables")
    text = interval_sections(str(exp), ["sdpo"], None)
    assert "| sdpo   | math   | 2     | 2     | 0.500 [" in text
    assert "| rosd   | math   | 2" not in text  # rosd's own cell is not asked for
    pairs = [line.split("|")[1:3] for line in text.splitlines() if line.startswith("| rosd") or line.startswith("| sdpo")]
    assert sorted((m.strip(), b.strip()) for m, b in pairs if b.strip() in ("base", "sdpo")) == [("rosd", "sdpo"), ("sdpo", "base")]
    assert interval_sections(str(exp / "nowhere"), None, None) == ""


# --- MLflow -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ingested_template(tmp_path_factory):
    """One store created once (SQLite migrations take seconds); tests work on copies of it."""
    exp = make_experiment(tmp_path_factory.mktemp("template") / "demo")
    assert ingest(str(exp), "demo", CONFIG) == 6
    return exp


@pytest.fixture
def ingested(ingested_template, tmp_path):
    return shutil.copytree(ingested_template, tmp_path / "demo")


def _runs(exp, level):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri(exp))
    try:
        return mlflow.search_runs(experiment_names=["demo"], filter_string=f"tags.level = '{level}'")
    finally:
        mlflow.set_tracking_uri(previous)


def _parents(exp):
    return _runs(exp, "seed")


def _children(exp):
    return _runs(exp, "round")


def test_ingest_twice_keeps_one_parent_per_run(ingested):
    before = _parents(ingested)
    assert ingest(str(ingested), "demo", CONFIG) == 6
    parents = _parents(ingested)
    assert sorted(parents["run_id"]) == sorted(before["run_id"])  # kept, not rewritten
    keys = parents[["tags.method", "tags.target", "tags.seed"]].apply(tuple, axis=1)
    assert sorted(keys) == sorted(
        [("base", "all", "0"), ("base", "all", "1")]
        + [(m, "math", s) for m in ("rosd", "sdpo") for s in ("0", "1")]
    )
    rosd0 = parents[(parents["tags.method"] == "rosd") & (parents["tags.seed"] == "0")].iloc[0]
    assert rosd0["params.model.hidden"] == "128"
    assert rosd0["params.methods"] == "['rosd', 'sdpo']"
    assert len(rosd0["params.notes"]) == 6000  # MLflow's param value limit
    assert rosd0["metrics.eval/math/mean_at_k"] == 0.75  # latest step = final round
    assert rosd0["metrics.eval/mcq/pass_at_2"] == pytest.approx(summarize(
        [{"id": f"p{i // 2}", "sample": i % 2, "correct": int(i < 2)} for i in range(8)], 2
    )["pass_at_2"])  # fmt: skip
    assert rosd0["metrics.train/loss"] == pytest.approx(0.5)

    children = _children(ingested)
    assert len(children) == 2 * 2 * 2
    mine = children[children["tags.mlflow.parentRunId"] == rosd0["run_id"]]
    assert sorted(mine["tags.round"]) == ["1", "2"]
    assert mine.set_index("tags.round").loc["2", "metrics.loss"] == pytest.approx(0.5)

    client = MlflowClient(tracking_uri(ingested))
    history = client.get_metric_history(rosd0["run_id"], "eval/math/mean_at_k")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.0), (2, 0.75)]
    child_loss = client.get_metric_history(mine.set_index("tags.round").loc["2", "run_id"], "loss")
    assert [m.step for m in child_loss] == [3 * FINAL]  # step = global optimizer step


def test_changed_input_recreates_that_parent_only(ingested):
    before = _parents(ingested).set_index(["tags.method", "tags.seed"])["run_id"]
    path = ingested / "runs/rosd/math/seed0/round2/metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "loss": 9.0}))
    assert ingest(str(ingested), "demo", CONFIG) == 6

    parents = _parents(ingested)
    assert len(parents) == 6
    after = parents.set_index(["tags.method", "tags.seed"])["run_id"]
    assert after["rosd", "0"] != before["rosd", "0"]
    assert (after.drop(("rosd", "0")) == before.drop(("rosd", "0"))).all()
    by_key = parents.set_index(["tags.method", "tags.seed"])
    assert by_key.loc[("rosd", "0"), "metrics.train/loss"] == 9.0
    children = _children(ingested)
    assert len(children) == 8  # the old parent's children went with it
    assert set(children["tags.mlflow.parentRunId"]) <= set(parents["run_id"])


def test_compare_table_equals_fixture_means(ingested):
    table = compare_table(str(ingested), "demo")
    assert list(table.index) == [("base", "all"), ("rosd", "math"), ("sdpo", "math")]
    for (method, seed, benchmark), _ in FINAL_CORRECT.items():
        expected = sum(FINAL_CORRECT[method, s, benchmark] for s in (0, 1)) / 16
        label = "math (ID)" if benchmark == "math" else "mcq (OOD)"
        assert table.loc[(method, "math"), (label, "mean")] == pytest.approx(expected)
        assert table.loc[(method, "math"), (label, "seeds")] == 2
    assert table.loc[("base", "all"), ("mcq (OOD)", "mean")] == pytest.approx(0.125)

    only_rosd = compare_table(str(ingested), "demo", methods=["rosd", "base"], targets=["math"])
    assert list(only_rosd.index) == [("base", "all"), ("rosd", "math")]
    markdown = format_markdown(only_rosd)
    assert "0.625 ± 0.177" in markdown and markdown.count("\n") == 4
