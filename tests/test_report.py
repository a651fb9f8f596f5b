"""The comparison side of a real pipeline run: plots, `snakemake --report` opened in headless
Chromium, and the MLflow store, on the embedded world with three methods and two seeds.

One run (module fixture) of tests/configs/tiny.yaml with seeds 0 and 1 and `--cores 2`, so jobs
run in parallel; the tests read its outputs. The last test changes a metric file and runs again.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.image import imread
from mlflow import MlflowClient
from pipeline_run import EXP, run

from rosd.cli import main as rosd_main
from rosd.reporting.plots import with_base_as_round_zero
from rosd.reporting.tracking import reflection_sample, tracking_uri

pytestmark = pytest.mark.pipeline  # every test here starts Snakemake or another process

# Only the last round evaluated: the learning curves have θ0 and round 2.
# The default config's execution (tiny.yaml pins one job per stage): each run's two rounds one
# block whose models stay resident, one evaluation job per checkpoint.
OVERLAY = {
    "methods": ["base", "opsd", "rosd"], "seeds": [0, 1], "evaluation": {"every_steps": None},
    "execution": {"rounds_per_job": 20, "resident": True, "evaluation_jobs": "checkpoint"},
}  # fmt: skip
PLOTS = ["heatmap.png", "learning_curves.png", "pass_at_k.png", "localization.png", "quote_offsets.png", "paired.png", "mechanism.png"]
# (method, target, seed) of every parent run: θ0 once per seed as "base"/"all", each trained run
PARENTS = sorted([("base", "all", s) for s in (0, 1)] + [(m, "math", s) for m in ("opsd", "rosd") for s in (0, 1)])
IDENTITY_KEYS = {"method", "target", "seed", "round", "step"}  # tags and step, not metrics
CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
MLFLOW_STORE_ERRORS = ("database is locked", "OperationalError")


# --- units: no pipeline -------------------------------------------------------------------


def test_every_learning_curve_starts_at_theta0_of_its_seed():
    evals = pd.DataFrame(
        [
            {"method": "base", "target": "all", "seed": 0, "round": 0, "benchmark": "math", "mean_at_k": 0.1},
            {"method": "base", "target": "all", "seed": 1, "round": 0, "benchmark": "math", "mean_at_k": 0.3},
            {"method": "rosd", "target": "math", "seed": 0, "round": 2, "benchmark": "math", "mean_at_k": 0.5},
            {"method": "rosd", "target": "math", "seed": 1, "round": 2, "benchmark": "math", "mean_at_k": 0.7},
            {"method": "opsd", "target": "mcq", "seed": 0, "round": 2, "benchmark": "math", "mean_at_k": 0.9},
        ]
    )
    curves = with_base_as_round_zero(evals).set_index(["method", "target", "seed", "round"])["mean_at_k"]
    assert curves["rosd", "math", 0, 0] == 0.1 and curves["rosd", "math", 1, 0] == 0.3
    assert curves["opsd", "mcq", 0, 0] == 0.1
    assert curves["base", "all", 1, 0] == 0.3  # θ0 keeps its own row too
    assert len(curves) == 5 + 2 + 2  # each trained (method, target) gets both seeds' θ0 rows


def test_reflection_sample_prefers_rows_in_the_loss_and_drops_token_ids(tmp_path):
    rows = [{"sample": i, "in_loss": i >= 3, "response": f"r{i}", "response_ids": [1, 2], "sampler_logps": [-0.1]} for i in range(20)]
    path = tmp_path / "reflections.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sample = [json.loads(line) for line in reflection_sample(path).splitlines()]
    assert [r["sample"] for r in sample] == list(range(3, 11))  # the first 8 in the loss
    assert all(set(r) == {"sample", "in_loss", "response"} for r in sample)
    assert reflection_sample(tmp_path / "absent.jsonl") is None


# --- one real run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def overlay(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "report.yaml"
    path.write_text(yaml.safe_dump(OVERLAY))
    return path


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, overlay) -> tuple[Path, str]:
    """(workdir, Snakemake's output) of the finished run."""
    workdir = tmp_path_factory.mktemp("report_run")
    result = run(workdir, configs=[overlay])
    return workdir, result.stdout + result.stderr


def _logs(exp: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in exp.rglob("*.log"))


def _parents(exp: Path):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri(exp))
    try:
        return mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.level = 'seed'")
    finally:
        mlflow.set_tracking_uri(previous)


def _identities(parents) -> list[tuple[str, str, int]]:
    keys = zip(parents["tags.method"], parents["tags.target"], parents["tags.seed"], strict=True)
    return sorted((m, t, int(s)) for m, t, s in keys)


def test_parallel_run_has_no_mlflow_store_error(pipeline):
    workdir, output = pipeline
    text = output + _logs(workdir / EXP)
    for error in MLFLOW_STORE_ERRORS:
        assert error not in text
    assert "parent_runs" in (workdir / EXP / "mlflow.ingested.json").read_text()


def test_long_stages_log_rate_and_eta(pipeline):
    workdir, _ = pipeline
    exp = workdir / EXP
    # a round whose groups all got the same reward has nothing to reflect, score or train on, so
    # each stage is judged by all of its logs together
    logs = {
        stage: list(exp.glob(f"runs/*/*/seed*/round*/logs/{stage}.log"))
        for stage in ("rollouts", "reflect", "teacher_score", "distill")
    }
    logs["evaluate"] = list(exp.glob("logs/evaluate/*.log"))
    for stage, paths in logs.items():
        assert paths, f"no {stage} logs"
        assert any("/s, ETA " in path.read_text() for path in paths), f"no {stage} log has a rate and ETA"


def test_plots_are_on_disk_and_not_blank(pipeline):
    workdir, _ = pipeline
    for name in PLOTS:
        pixels = imread(workdir / EXP / "plots" / name)[..., :3]
        assert pixels.var() > 0, name
        # more than a title on a blank canvas: a real share of pixels differs from the corner's
        differs = np.any(pixels != pixels[0, 0], axis=-1).mean()
        assert differs > 0.02, f"{name}: only {differs:.1%} of the pixels are drawn"


def test_table_page_holds_every_method(pipeline):
    workdir, _ = pipeline
    page = (workdir / EXP / "tables" / "comparison.html").read_text()
    assert page.count("<table") == 4  # comparison, its intervals, the paired differences, localization
    for label in ("math (ID)", "mcq (OOD)", "base", "opsd", "rosd", "95% interval"):
        assert label in page
    assert "rosd</td>\n      <td>opsd" in page  # the paired row rosd − opsd


@pytest.fixture(scope="module")
def report(pipeline, overlay) -> Path:
    workdir, _ = pipeline
    out = workdir / "report.html"
    run(workdir, "--report", str(out), configs=[overlay])  # the run's own config: same DAG
    return out


def _report_results(report_html: str) -> dict:
    """The report's embedded results: ``var results = {...};`` in its <script id="results">."""
    start = report_html.index('<script id="results">')
    body = report_html[start : report_html.index("</script>", start)]
    return json.loads(body.split("var results =", 1)[1].strip().rstrip(";"))


def test_report_embeds_every_plot_and_the_tables(report):
    results = _report_results(report.read_text())
    names = {Path(path).name: entry for path, entry in results.items()}
    for name in PLOTS:
        assert names[name]["mime_type"] == "image/png"
        assert names[name]["data_uri"].startswith("data:image/png")
        assert names[name]["caption"].strip(), f"{name} has no caption"
    for name in ("comparison.html", "comparison.csv", "comparison.md", "localization.csv", "quote_offsets.csv"):
        assert name in names
    caption = html.unescape(names["heatmap.png"]["caption"])  # rendered from reStructuredText
    assert "mean@k (k = 2 samples per problem)" in caption  # the caption reads the run's config


# Injected at the end of a copy of the report. While the page parses, it adds every embedded
# image as a hidden <img>, so the page's load event waits until they have loaded. In the load
# handler, synchronously (--dump-dom dumps right after the load event): it shows each image the
# way a click on the result's eye button does (result_view_button.js: app.setView, flushed by
# React at once) and finds it displayed, draws the loaded image onto a canvas and measures it,
# parses every embedded HTML page's tables, and writes what it found into <pre id="rosd-check">.
# Errors thrown by the report's own scripts are collected from the start (CATCH_ERRORS).
CATCH_ERRORS = "<script>window.rosdErrors=[];addEventListener('error',e=>rosdErrors.push(String(e.message)));</script>"
CHECK_SCRIPT = """<script>
const probes = document.createElement("div");
probes.style.display = "none";
for (const [path, entry] of Object.entries(results)) {
  if (!entry.mime_type.startsWith("image/")) continue;
  const probe = document.createElement("img");
  probe.dataset.path = path;
  probe.src = entry.data_uri;
  probes.appendChild(probe);
}
document.body.appendChild(probes);

function measure(image) {
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let drawn = 0;  // pixels that differ from the top-left one (the background)
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] !== data[0] || data[i + 1] !== data[1] || data[i + 2] !== data[2]) drawn++;
  }
  return {width: image.naturalWidth, height: image.naturalHeight, drawn: drawn / (data.length / 4)};
}
function shownByReport(path, entry) {
  ReactDOM.flushSync(() => app.setView({content: "img", contentPath: entry.data_uri, resultPath: path}));
  return Array.from(document.querySelectorAll("#app img")).some(img => img.src === entry.data_uri);
}
function tableRows(uri) {
  const bytes = Uint8Array.from(atob(uri.slice(uri.indexOf("base64,") + 7)), c => c.charCodeAt(0));
  const page = new DOMParser().parseFromString(new TextDecoder().decode(bytes), "text/html");
  return Array.from(page.querySelectorAll("table tr"), row => Array.from(row.cells, cell => cell.textContent.trim()));
}
addEventListener("load", () => {
  const found = {images: {}, pages: {}, errors: []};
  try {
    ReactDOM.flushSync(() => {});  // the report's first render, if React has not done it yet
    found.app = document.getElementById("app").textContent;
    for (const probe of probes.children) {
      const path = probe.dataset.path;
      found.images[path] = {...measure(probe), shown: shownByReport(path, results[path])};
    }
    for (const [path, entry] of Object.entries(results)) {
      if (entry.mime_type === "text/html") found.pages[path] = tableRows(entry.data_uri);
    }
  } catch (error) {
    found.errors.push(String(error));
  }
  found.errors.push(...rosdErrors);
  const out = document.createElement("pre");
  out.id = "rosd-check";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>"""


TABLES = ["comparison.html", "comparison.csv", "comparison.md", "intervals.csv", "paired.csv", "localization.csv", "quote_offsets.csv", "rounds.csv", "evals.csv"]


@pytest.fixture(scope="module")
def report_zip(pipeline, overlay) -> Path:
    workdir, _ = pipeline
    out = workdir / "report.zip"
    run(workdir, "--report", str(out), configs=[overlay])
    return out


def test_report_zip_holds_every_result_with_a_category_and_a_caption(report_zip):
    with zipfile.ZipFile(report_zip) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        page = archive.read("report/report.html").decode()
    assert {Path(n).name for n in names if n.startswith("report/data/raw/")} == {*PLOTS, *TABLES}
    results = _report_results(page)
    categories = json.loads(re.search(r"var categories = (\{.*?\});\n", page).group(1))
    filed = {path for sub in categories.values() for paths in sub.values() for path in paths}
    assert sorted(Path(p).name for p in results) == sorted([*PLOTS, *TABLES])
    for path, entry in results.items():
        assert path in filed, f"{path} has no category"
        assert html.unescape(entry["caption"]).strip(), f"{path} has no caption"
    assert set(categories) == {"Comparison", "Data", "Plots"}


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_every_plot_and_the_table_in_chromium(report, tmp_path):
    page = report.read_text()
    # the first <head> is the page's; the embedded scripts contain "</body>" strings, so the last one
    head, body = page.replace("<head>", "<head>" + CATCH_ERRORS, 1).rsplit("</body>", 1)
    page = head + CHECK_SCRIPT + "</body>" + body
    checked = tmp_path / "checked_report.html"
    checked.write_text(page)
    command = [
        CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
        "--dump-dom", checked.as_uri(),
    ]  # fmt: skip
    dom = subprocess.run(command, capture_output=True, text=True, timeout=180).stdout
    assert 'id="rosd-check"' in dom, f"the check script did not finish:\n{dom[-2000:]}"
    found = json.loads(html.unescape(dom.split('id="rosd-check">', 1)[1].split("</pre>", 1)[0]))

    assert found["errors"] == []
    assert "Plots" in found["app"] and "Comparison" in found["app"], "the report's menu did not render"
    images = {Path(path).name: info for path, info in found["images"].items()}
    assert sorted(images) == sorted(PLOTS)
    for name, info in images.items():
        assert info["shown"], f"the report did not display {name}"
        assert info["width"] > 0 and info["height"] > 0, name
        assert info["drawn"] > 0.02, f"{name} renders blank"
    pages = {Path(path).name: rows for path, rows in found["pages"].items()}
    rows = pages["comparison.html"]
    assert rows[0][:2] == ["method", "target"] and "math (ID)" in rows[0]
    assert {row[0] for row in rows[1:]} >= {"base", "opsd", "rosd"}


def test_mlflow_one_parent_per_run_with_params_metrics_and_artifacts(pipeline):
    workdir, _ = pipeline
    exp = workdir / EXP
    parents = _parents(exp)
    assert _identities(parents) == PARENTS
    for parent in parents.to_dict("records"):
        assert parent["params.experiment"] == "tiny"
        assert parent["params.seeds"] == "[0, 1]"
        assert parent["params.train.batch_prompts"] == "4"
        assert parent["metrics.eval/math/k"] == 2
        assert 0.0 <= parent["metrics.eval/mcq/mean_at_k"] <= 1.0
        assert 0.0 <= parent["metrics.eval/math/pass_at_2"] <= 1.0

    client = MlflowClient(tracking_uri(exp))
    trained = parents[parents["tags.method"] != "base"].to_dict("records")
    config = yaml.safe_load(Path(client.download_artifacts(trained[0]["run_id"], "config.yaml")).read_text())
    assert config["seeds"] == [0, 1] and config["experiment"] == "tiny"
    logged_names = set()
    for parent in trained:
        children = client.search_runs([parent["experiment_id"]], f"tags.mlflow.parentRunId = '{parent['run_id']}'")
        assert sorted(child.data.tags["round"] for child in children) == ["1", "2"]
        for child in children:
            # every number of the round's metrics.json, nothing else (a null, e.g. the loss of a
            # round without an update, is left out)
            run_dir = exp / "runs" / parent["tags.method"] / "math" / f"seed{parent['tags.seed']}"
            metrics = json.loads((run_dir / f"round{child.data.tags['round']}" / "metrics.json").read_text())
            numbers = {
                k: v for k, v in metrics.items()
                if k not in IDENTITY_KEYS and isinstance(v, int | float) and not isinstance(v, bool)
            }  # fmt: skip
            assert child.data.metrics == pytest.approx(numbers)
            logged_names |= set(child.data.metrics)
            sample = Path(client.download_artifacts(child.info.run_id, "samples/reflections.jsonl"))
            rows = [json.loads(line) for line in sample.read_text().splitlines()]
            assert 0 < len(rows) <= 8
            assert all("response" in row and not any(k.endswith("_ids") for k in row) for row in rows)
    assert {"loss", "grad_norm", "rollout_accuracy", "reflection_parse_rate", "loss_token_frac"} <= logged_names


def test_compare_filters_and_writes_csv_and_markdown(pipeline, tmp_path, capsys):
    workdir, _ = pipeline
    prefix = tmp_path / "pass2"
    common = ["compare", "--results", str(workdir / "results"), "--experiment", "tiny"]
    rosd_main([*common, "--method", "base", "--method", "rosd", "--target", "math", "--metric", "pass_at_2", "--out", str(prefix)])
    printed = capsys.readouterr().out
    table = pd.read_csv(f"{prefix}.csv")
    assert list(zip(table["method"], table["target"])) == [("base", "all"), ("rosd", "math")]
    assert list(table["math (ID) seeds"]) == [2, 2]
    parents = _parents(workdir / EXP)
    rosd = parents[parents["tags.method"] == "rosd"]["metrics.eval/math/pass_at_2"]
    assert table.set_index("method").loc["rosd", "math (ID) mean"] == pytest.approx(rosd.mean())
    assert Path(f"{prefix}.md").read_text() == printed.removesuffix("\n")
    assert "opsd" not in printed
    with pytest.raises(SystemExit, match="no runs .* metric 'pass_at_99'"):
        rosd_main([*common, "--metric", "pass_at_99"])


def test_reingest_keeps_one_parent_per_run(pipeline, overlay):
    workdir, _ = pipeline
    exp = workdir / EXP
    before = _parents(exp).set_index(["tags.method", "tags.seed"])["run_id"]

    # the same inputs, ingested again: every parent is kept as it is
    output = run(workdir, "--forcerun", "track", configs=[overlay])
    assert "track" in output.stdout + output.stderr
    again = _parents(exp)
    assert _identities(again) == PARENTS
    assert sorted(again["run_id"]) == sorted(before)

    # a changed round metric reaches MLflow through aggregate and track: that parent is replaced
    metrics = exp / "runs" / "rosd" / "math" / "seed1" / "round2" / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "loss": 9.0}))
    output = run(workdir, configs=[overlay])
    assert not any(error in output.stdout + output.stderr for error in MLFLOW_STORE_ERRORS)
    after = _parents(exp)
    assert _identities(after) == PARENTS
    by_run = after.set_index(["tags.method", "tags.seed"])
    assert by_run.loc[("rosd", "1"), "run_id"] != before["rosd", "1"]
    assert by_run.loc[("rosd", "1"), "metrics.train/loss"] == 9.0
    assert by_run.loc[("opsd", "0"), "run_id"] == before["opsd", "0"]
