"""Plots stage: PNG figures and an HTML table page of one experiment, for people and for
``snakemake --report`` (docs/comparing_runs.md, "Plots" and "Report"). Reads only the aggregate
stage's tables, so it never touches a model or a metric file.

Writes into ``out_dir``:
  heatmap.png          mean@k at the final evaluated round: one row per (method, target), one
                       column per benchmark, in-domain cells outlined
  learning_curves.png  per round: training loss, rollout accuracy, mean@k on each benchmark
                       (θ0, method "base", is round 0 of every evaluation curve)
  pass_at_k.png        pass@j against j at the final evaluated round, one panel per benchmark
  localization.png     per round: reflection parse rate, quote-found rate, quote start,
                       loss-token fraction, first-error hit rate
  quote_offsets.png    where the quotes of wrong rollouts start, in lines from the true first
                       error, as shares of each (method, target)'s found quotes (quote_offsets.csv)
  paired.png           paired differences between methods on the same problems with their 95%
                       intervals, one panel per benchmark (paired.csv)
  mechanism.png        per round: where the teacher pulls the student (KL and top-1
                       disagreement before the first error and on correct rollouts), which
                       solution paths correct rollouts take, and the loss-token shares of wrong
                       and correct rollouts
and ``table_page``: the comparison (with its intervals and paired differences) and localization
tables as one self-contained HTML page.

Every curve is the mean over seeds, with a band of ± one standard deviation where there are
several seeds.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path

import pandas as pd
from matplotlib.figure import (
    Figure,  # no pyplot: no global state, no display backend needed
)
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from rosd.io.files import atomic_path
from rosd.reporting.aggregate import BASE_TARGET, LOCALIZATION, wide_intervals

BASE_LABEL = "base (θ0)"
TRAINING = {"loss": "training loss", "rollout_accuracy": "rollout accuracy"}
LOCALIZATION_TITLES = {
    "reflection_parse_rate": "reflection parse rate",
    "quote_found_rate": "quote found (wrong rollouts)",
    "quote_start_frac": "quote start / response length",
    "loss_token_frac": "loss-token fraction",
    "first_error_hit_rate": "quote on the first error",
}
# per round, the mechanism metrics (docs/method.md, "Logged per round"); True: a share in [0, 1]
MECHANISM_TITLES = {
    "prefix_kl": ("KL(teacher‖student), prefix", False),
    "correct_kl": ("KL(teacher‖student), correct", False),
    "prefix_top1_disagreement": ("teacher top-1 ≠ sampled, prefix", True),
    "path_entropy": ("correct paths' entropy (nats)", False),
    "sibling_path_share": ("correct on the sibling's path", True),
    "loss_token_frac_wrong": ("loss-token fraction, wrong", True),
    "loss_token_frac_correct": ("loss-token fraction, correct", True),
}
PANEL_SIZE = (4.0, 3.0)  # inches per subplot
MAX_LABELLED_TICKS = 12


def series_label(method: str, target: str) -> str:
    return BASE_LABEL if target == BASE_TARGET else f"{method} ({target})"


def _colors(labels: list[str]) -> dict[str, str]:
    """One fixed color per series across all figures; θ0 is always grey."""
    palette = [f"C{i}" for i in range(10) if i != 7]  # C7 is matplotlib's grey
    trained = sorted(label for label in labels if label != BASE_LABEL)
    colors = {label: palette[i % len(palette)] for i, label in enumerate(trained)}
    colors[BASE_LABEL] = "C7"
    return colors


def _grid(n_panels: int, columns: int = 3) -> tuple[Figure, list]:
    columns = max(1, min(columns, n_panels))
    rows = math.ceil(n_panels / columns)
    figure = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for unused in axes[n_panels:]:
        unused.set_axis_off()
    return figure, axes[:n_panels]


def _no_data(ax, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _seed_curves(ax, long: pd.DataFrame, x: str, value: str, colors: dict[str, str]) -> bool:
    """Draw mean ± std over seeds of ``value`` against ``x``, one line per (method, target).
    Returns whether anything was drawn."""
    if value not in long.columns:  # e.g. no trained run, so no round metrics at all
        return False
    data = long.assign(**{value: pd.to_numeric(long[value], errors="coerce")}).dropna(subset=[value])
    if data.empty:
        return False
    stats = data.groupby(["method", "target", x])[value].agg(["mean", "std"]).reset_index()
    for (method, target), curve in stats.groupby(["method", "target"], sort=True):
        label = series_label(method, target)
        ax.plot(curve[x], curve["mean"], marker="o", label=label, color=colors[label])
        spread = curve["std"].fillna(0.0)
        if spread.any():
            ax.fill_between(curve[x], curve["mean"] - spread, curve["mean"] + spread, alpha=0.2, color=colors[label])
    # rounds and j are whole numbers: a tick on each one while they are few, else whole ticks
    xs = sorted(data[x].unique())
    if len(xs) <= MAX_LABELLED_TICKS:
        ax.set_xticks(xs, [str(int(v)) for v in xs])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return True


def _save(figure: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:  # readers (the report) never see half a PNG
        figure.savefig(tmp, format="png", dpi=100)
    return path


def final_round(evals: pd.DataFrame) -> pd.DataFrame:
    """The rows of each (method, target)'s last evaluated round (θ0: round 0)."""
    last = evals.groupby(["method", "target"])["round"].transform("max")
    return evals[evals["round"] == last]


def with_base_as_round_zero(evals: pd.DataFrame) -> pd.DataFrame:
    """Evaluation rows where each trained (method, target) also gets θ0's rows of the same seed
    as its round 0, so every learning curve starts at the model it was trained from."""
    base = evals[evals["target"] == BASE_TARGET]
    trained = evals[evals["target"] != BASE_TARGET]
    starts = [
        base.assign(method=method, target=target)
        for method, target in trained[["method", "target"]].drop_duplicates().itertuples(index=False)
    ]
    return pd.concat([base, trained, *starts], ignore_index=True)


def heatmap(evals: pd.DataFrame, path: Path) -> Path:
    final = final_round(evals)
    benchmarks = sorted(final["benchmark"].unique())
    grouped = final.groupby(["method", "target", "benchmark"])["mean_at_k"].mean().unstack("benchmark")
    rows = sorted(grouped.index, key=lambda mt: (mt[1] != BASE_TARGET, mt[1], mt[0]))  # θ0 first
    values = grouped.reindex(index=rows, columns=benchmarks)
    # θ0 is evaluated on every benchmark in every run, so there is always at least one row
    figure = Figure(figsize=(2.0 + 1.4 * len(benchmarks), 1.5 + 0.6 * len(rows)), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(values.to_numpy(dtype=float), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    figure.colorbar(image, ax=ax, label="mean@k")
    ax.set_xticks(range(len(benchmarks)), benchmarks)
    ax.set_yticks(range(len(rows)), [series_label(m, t) for m, t in rows])
    for i, (method, target) in enumerate(rows):
        for j, benchmark in enumerate(benchmarks):
            value = values.iloc[i, j]
            if not math.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
            if benchmark == target:  # in-domain: the benchmark the row was trained on
                ax.add_patch(_outline(j, i))
    ax.set_title("mean@k at the final round (outlined: in-domain)")
    return _save(figure, path)


def _outline(column: int, row: int) -> Rectangle:
    return Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5)


def learning_curves(rounds: pd.DataFrame, evals: pd.DataFrame, path: Path) -> Path:
    benchmarks = sorted(evals["benchmark"].unique())
    curves = with_base_as_round_zero(evals)
    trained_curves = curves[curves["target"] != BASE_TARGET]
    colors = _colors([series_label(m, t) for m, t in curves[["method", "target"]].drop_duplicates().itertuples(index=False)])
    figure, axes = _grid(len(TRAINING) + len(benchmarks))
    for ax, (key, title) in zip(axes, TRAINING.items()):
        if not _seed_curves(ax, rounds, "round", key, colors):
            _no_data(ax, title)  # only base was run: nothing was trained
            continue
        ax.set_title(title)
        ax.set_xlabel("round")
    for ax, benchmark in zip(axes[len(TRAINING):], benchmarks):
        own = trained_curves[trained_curves["benchmark"] == benchmark]
        if own.empty:  # only θ0 was evaluated: a single point
            own = curves[curves["benchmark"] == benchmark]
        _seed_curves(ax, own, "round", "mean_at_k", colors)
        ax.set_title(f"mean@k on {benchmark}")
        ax.set_xlabel("round (0 = θ0)")
        ax.set_ylim(-0.02, 1.02)
    _legend(figure, axes)
    return _save(figure, path)


def pass_at_k(evals: pd.DataFrame, path: Path) -> Path:
    final = final_round(evals)
    columns = [c for c in final.columns if c.startswith("pass_at_")]
    long = final.melt(id_vars=["method", "target", "seed", "benchmark"], value_vars=columns, var_name="j", value_name="pass")
    long["j"] = long["j"].str.removeprefix("pass_at_").astype(int)
    benchmarks = sorted(final["benchmark"].unique())
    colors = _colors([series_label(m, t) for m, t in final[["method", "target"]].drop_duplicates().itertuples(index=False)])
    figure, axes = _grid(len(benchmarks))
    for ax, benchmark in zip(axes, benchmarks):
        ax.set_xscale("log", base=2)  # j runs 1..k: a log axis keeps small j readable
        if not _seed_curves(ax, long[long["benchmark"] == benchmark], "j", "pass", colors):
            _no_data(ax, f"pass@j on {benchmark}")
            continue
        ax.set_title(f"pass@j on {benchmark}, final round")
        ax.set_xlabel("j (samples)")
        ax.set_ylim(-0.02, 1.02)
    _legend(figure, axes)
    return _save(figure, path)


def localization(rounds: pd.DataFrame, path: Path) -> Path:
    labels = [series_label(m, t) for m, t in rounds[["method", "target"]].drop_duplicates().itertuples(index=False)]
    colors = _colors(labels)
    figure, axes = _grid(len(LOCALIZATION))
    for ax, key in zip(axes, LOCALIZATION):
        title = LOCALIZATION_TITLES[key]
        if not _seed_curves(ax, rounds, "round", key, colors):
            _no_data(ax, title)  # e.g. only opsd trained: it neither reflects nor quotes
            continue
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.set_ylim(-0.02, 1.02)
    _legend(figure, axes)
    return _save(figure, path)


def mechanism(rounds: pd.DataFrame, path: Path) -> Path:
    """One panel per mechanism metric over rounds, one curve per (method, target)."""
    colors = _colors([series_label(m, t) for m, t in rounds[["method", "target"]].drop_duplicates().itertuples(index=False)])
    figure, axes = _grid(len(MECHANISM_TITLES))
    for ax, (key, (title, share)) in zip(axes, MECHANISM_TITLES.items()):
        if not _seed_curves(ax, rounds, "round", key, colors):
            _no_data(ax, title)  # e.g. no world task, or no top-k + tail support
            continue
        ax.set_title(title)
        ax.set_xlabel("round")
        if share:
            ax.set_ylim(-0.02, 1.02)
    _legend(figure, axes)
    return _save(figure, path)


def quote_offsets(offsets: pd.DataFrame, path: Path) -> Path:
    """A histogram per (method, target), side by side: the share of found quotes starting ``offset``
    lines from the true first error. The bar at 0 is the first-error hit rate."""
    figure, (ax,) = _grid(1)
    title = "quote start − true first error"
    if offsets.empty:
        _no_data(ax, title)
        return _save(figure, path)
    series = sorted(offsets[["method", "target"]].drop_duplicates().itertuples(index=False, name=None))
    colors = _colors([series_label(m, t) for m, t in series])
    width = 0.8 / len(series)
    for i, (method, target) in enumerate(series):
        own = offsets[(offsets["method"] == method) & (offsets["target"] == target)]
        label = series_label(method, target)
        ax.bar(own["offset"] + (i - (len(series) - 1) / 2) * width, own["count"] / own["count"].sum(), width,
               label=f"{label}, {own['count'].sum()} quotes", color=colors[label])
    ax.axvline(0.0, color="grey", linewidth=1, linestyle="--")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.set_xlabel("lines (0: on the first error, < 0: before it)")
    ax.set_ylabel("share of found quotes")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.4)  # headroom: the legend must not cover the tallest bar
    ax.legend(fontsize="small", loc="upper left")
    return _save(figure, path)


def paired_differences(paired: pd.DataFrame, path: Path) -> Path:
    """One panel per benchmark: each (method − baseline) difference of mean@k as a point with its
    95% interval; an interval clear of the zero line is a resolved difference."""
    benchmarks = sorted(paired["benchmark"].unique(), key=lambda b: (not paired.loc[paired["benchmark"] == b, "in_domain"].any(), b))
    figure, axes = _grid(max(1, len(benchmarks)))
    if not benchmarks:
        _no_data(axes[0], "paired differences")
    for ax, benchmark in zip(axes, benchmarks):
        rows = paired[paired["benchmark"] == benchmark].iloc[::-1]  # first row on top
        labels = [f"{m} − {b}" + (f" ({t})" if paired["target"].nunique() > 1 else "") for m, b, t in zip(rows["method"], rows["baseline"], rows["target"])]
        positions = range(len(rows))
        ax.errorbar(rows["difference"], positions, xerr=[rows["difference"] - rows["low"], rows["high"] - rows["difference"]],
                    fmt="o", color="tab:blue", capsize=3)  # fmt: skip
        ax.axvline(0.0, color="grey", linewidth=1, linestyle="--")
        ax.set_yticks(list(positions), labels)
        domain = "ID" if rows["in_domain"].any() else "OOD"
        ax.set_title(f"{benchmark} ({domain}): difference of mean@k")
        ax.set_xlabel("method − baseline, 95% interval")
    return _save(figure, path)


def _legend(figure: Figure, axes: list) -> None:
    """One legend for the figure: every series that any panel drew."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    labels = sorted(entries, key=lambda label: (label != BASE_LABEL, label))  # same order in every figure
    if labels:
        figure.legend([entries[label] for label in labels], labels, loc="outside lower center", ncols=min(len(labels), 6))


def table_page(comparison: pd.DataFrame, intervals: pd.DataFrame, paired: pd.DataFrame, localization_stats: pd.DataFrame, path: Path) -> Path:
    """The comparison (its intervals and paired differences too) and localization tables as one HTML
    page that the report shows inline."""
    sections = [
        ("Comparison: mean@k at the final evaluated round (mean ± std over seeds)", comparison),
        ("mean@k with its 95% interval (bootstrap over problems and seeds)",
         wide_intervals(intervals, ["method", "target", "round", "seeds"], "mean")),
        ("Paired differences on the same problems: method − baseline, 95% interval",
         wide_intervals(paired, ["method", "baseline", "target"], "difference", signed=True)),
        ("Localization (mean over rounds and seeds)", localization_stats),
    ]  # fmt: skip
    body = "".join(
        f"<h2>{html.escape(title)}</h2>\n"
        + table.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.3f}", classes="rosd", border=0)
        for title, table in sections
    )
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>rosd comparison</title>\n'
        "<style>body{font-family:sans-serif;margin:1em}table.rosd{border-collapse:collapse}"
        "table.rosd th,table.rosd td{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "table.rosd th{background:#f0f0f0}</style></head>\n"
        f"<body>\n<p>ID = in-domain (the benchmark is the run's train target), OOD = out-of-domain; "
        f"base is the untrained θ0.</p>\n{body}</body></html>\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def write_plots(rounds: str | os.PathLike, evals: str | os.PathLike, comparison: str | os.PathLike,
                intervals: str | os.PathLike, paired: str | os.PathLike, localization_table: str | os.PathLike,
                quote_offsets_table: str | os.PathLike, out_dir: str | os.PathLike, out_page: str | os.PathLike) -> list[Path]:
    """Every figure into ``out_dir`` and the table page to ``out_page``; returns the paths written."""
    rounds_df = pd.read_csv(rounds)
    evals_df = pd.read_csv(evals)
    paired_df = pd.read_csv(paired)
    out = Path(out_dir)
    return [
        heatmap(evals_df, out / "heatmap.png"),
        learning_curves(rounds_df, evals_df, out / "learning_curves.png"),
        pass_at_k(evals_df, out / "pass_at_k.png"),
        localization(rounds_df, out / "localization.png"),
        quote_offsets(pd.read_csv(quote_offsets_table), out / "quote_offsets.png"),
        paired_differences(paired_df, out / "paired.png"),
        mechanism(rounds_df, out / "mechanism.png"),
        table_page(pd.read_csv(comparison, dtype=str, keep_default_na=False), pd.read_csv(intervals), paired_df,
                   pd.read_csv(localization_table), Path(out_page)),
    ]  # fmt: skip
