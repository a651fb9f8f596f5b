"""Aggregate stage: turn one experiment's metric files into human-readable tables (docs/comparing_runs.md, "Tables").

Reads, under ``results/<experiment>/``:
  runs/{method}/{target}/seed{seed}/round{r}/metrics.json      round training metrics
  eval/{method}/{target}/seed{seed}/round{r}/{benchmark}.jsonl per-sample correctness
  eval/.../{benchmark}.json                                    its summary (rosd.evaluation.metrics.summarize)

Writes rounds.csv, evals.csv, comparison.csv, localization.csv, intervals.csv (mean@k with its 95%
interval per cell), paired.csv (paired differences between methods with their intervals),
quote_offsets.csv (where quotes start against the true first error) and comparison.md (all but the
last as text).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from rosd.evaluation.intervals import mean_interval, paired_difference, problem_scores
from rosd.evaluation.metrics import summarize
from rosd.io.files import CorruptOutputError, atomic_path, read_output

BASE_TARGET = "all"  # the untrained θ0 is evaluated once per seed as method "base", target "all"
IDENTITY = ["method", "target", "seed", "round"]
LOCALIZATION = [
    "reflection_parse_rate",
    "quote_found_rate",
    "quote_start_frac",
    "loss_token_frac",
    "first_error_hit_rate",
]
QUOTE_OFFSETS = "quote_line_offsets"  # a round's {lines from the true first error: found quotes}


def _identity(path: Path, root: Path) -> dict:
    method, target, seed_dir, round_dir = path.relative_to(root).parts[:4]
    return {
        "method": method,
        "target": target,
        "seed": int(seed_dir.removeprefix("seed")),
        "round": int(round_dir.removeprefix("round")),
    }


def _read_object(path: Path) -> dict:
    """A JSON object a stage wrote (a round's metrics, an evaluation's summary)."""
    value = read_output(path)
    if not isinstance(value, dict):
        raise CorruptOutputError(path, None, f"not a JSON object but {type(value).__name__}")
    return value


def _eval_row(path: Path, root: Path) -> dict:
    identity = _identity(path, root)
    summary_path = path.with_suffix(".json")
    if summary_path.exists():
        summary = _read_object(summary_path)
    else:  # the per-sample records are the source of truth; recompute a missing summary
        records = read_output(path)
        per_problem = len(records) // max(1, len({r["id"] for r in records}))
        summary = summarize(records, k=per_problem)
    benchmark = path.stem
    return {
        **identity,
        "benchmark": benchmark,
        "in_domain": benchmark == identity["target"],
        **summary,
    }


def collect(exp_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rounds_df, evals_df): one row per round metrics file, one per (checkpoint, benchmark)."""
    exp = Path(exp_dir)
    runs, evals = exp / "runs", exp / "eval"
    rounds = [
        {**_identity(p, runs), **_read_object(p)}
        for p in sorted(runs.glob("*/*/seed*/round*/metrics.json"))
    ]
    scores = [_eval_row(p, evals) for p in sorted(evals.glob("*/*/seed*/round*/*.jsonl"))]
    rounds_df = pd.DataFrame(rounds, columns=None if rounds else IDENTITY)
    evals_df = pd.DataFrame(scores, columns=None if scores else [*IDENTITY, "benchmark"])
    return (
        rounds_df.sort_values(IDENTITY, ignore_index=True),
        evals_df.sort_values([*IDENTITY, "benchmark"], ignore_index=True),
    )


def seed_stats(long: pd.DataFrame, value: str) -> pd.DataFrame:
    """Mean, std (ddof=1) and count over seeds of ``value`` per (method, target) and benchmark.

    ``long`` has one row per (method, target, seed, benchmark). The result has index
    (method, target) and columns (label, stat) with stat in mean/std/seeds; a label is
    "<benchmark> (ID)" where the benchmark is the row's train target, else "<benchmark> (OOD)".
    In-domain columns come first. Rows with target "all" (θ0) fill every column of a benchmark.
    """
    if long.empty:
        return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=["method", "target"]))
    trained = long[long["target"] != BASE_TARGET]
    trained = trained.assign(label=[_label(b, t) for b, t in zip(trained["benchmark"], trained["target"], strict=True)])
    labels_of = trained.groupby("benchmark")["label"].unique()
    base_rows = [
        {**row, "label": label}
        for row in long[long["target"] == BASE_TARGET].to_dict("records")
        for label in labels_of.get(row["benchmark"], [f"{row['benchmark']} (OOD)"])
    ]
    labelled = pd.concat([trained, pd.DataFrame(base_rows, columns=trained.columns)])
    stats = labelled.groupby(["method", "target", "label"])[value].agg(
        mean="mean", std="std", seeds="count"
    )
    wide = stats.unstack("label").swaplevel(axis=1)
    labels = wide.columns.get_level_values(0).unique()
    ordered = sorted(labels, key=lambda label: (label.endswith("(OOD)"), label))
    wide = wide.reindex(columns=pd.MultiIndex.from_product([ordered, ["mean", "std", "seeds"]]))
    base_first = sorted(wide.index, key=lambda mt: (mt[1] != BASE_TARGET, mt[1], mt[0]))
    return wide.reindex(base_first)


def _cell(mean: float, std: float, seeds: float, digits: int) -> str:
    if not seeds or math.isnan(mean):
        return ""
    if seeds == 1:  # no spread to report from a single seed
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_mean_std(stats: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``seed_stats`` output as strings "mean ± std", with method, target and seeds columns."""
    if stats.empty:
        return pd.DataFrame(columns=["method", "target", "seeds"])
    out = pd.DataFrame(index=stats.index)
    out["seeds"] = stats.xs("seeds", axis=1, level=1).max(axis=1).fillna(0).astype(int)
    for label in stats.columns.get_level_values(0).unique():
        cols = stats[label]
        out[label] = [
            _cell(m, s, n, digits)
            for m, s, n in zip(cols["mean"], cols["std"], cols["seeds"].fillna(0), strict=True)
        ]
    return out.rename_axis(["method", "target"]).reset_index()


def comparison_table(evals: pd.DataFrame, metric: str = "mean_at_k") -> pd.DataFrame:
    """One row per (method, target): ``metric`` at the final evaluated round, mean ± std over seeds.

    The final round is the last one evaluated for the (method, target); seeds that have not
    reached it are left out, which the seeds column shows.
    """
    if evals.empty:
        return pd.DataFrame(columns=["method", "target", "round", "seeds"])
    last = evals.groupby(["method", "target"])["round"].transform("max")
    final = evals[evals["round"] == last]
    table = format_mean_std(seed_stats(final, metric))
    rounds = final.groupby(["method", "target"])["round"].max()
    keys = zip(table["method"], table["target"], strict=True)
    table.insert(2, "round", [rounds[key] for key in keys])
    return table


def final_scores(exp_dir: str | os.PathLike, evals: pd.DataFrame) -> dict[tuple[str, str, str], tuple[int, pd.DataFrame]]:
    """Per (method, target, benchmark) at its final evaluated round: (round, per-problem scores),
    one row per seed and one column per problem id (the evaluations' jsonl files)."""
    if evals.empty:
        return {}
    last = evals.groupby(["method", "target"])["round"].transform("max")
    final = evals[evals["round"] == last]
    root, out = Path(exp_dir) / "eval", {}
    for (method, target, benchmark), rows in final.groupby(["method", "target", "benchmark"]):
        by_seed = {}
        for seed, round_ in zip(rows["seed"], rows["round"], strict=True):
            path = root / method / target / f"seed{seed}" / f"round{round_}" / f"{benchmark}.jsonl"
            by_seed[seed] = problem_scores(read_output(path))
        matrix = pd.DataFrame.from_dict(by_seed, orient="index").sort_index(axis=0).sort_index(axis=1)
        out[(method, target, benchmark)] = (int(rows["round"].max()), matrix.dropna(axis=1))
    return out


def interval_table(scores: dict) -> pd.DataFrame:
    """One row per (method, target, benchmark): mean@k over seeds and problems with its 95%
    interval (rosd/evaluation/intervals.py)."""
    rows = []
    for (method, target, benchmark), (round_, matrix) in scores.items():
        mean, low, high = mean_interval(matrix.to_numpy())
        rows.append({"method": method, "target": target, "round": round_, "benchmark": benchmark,
                     "in_domain": benchmark == target, "seeds": len(matrix), "problems": matrix.shape[1],
                     "mean": mean, "low": low, "high": high})  # fmt: skip
    return pd.DataFrame(rows, columns=["method", "target", "round", "benchmark", "in_domain", "seeds", "problems", "mean", "low", "high"])


def _minuend_first(method: str, other: str) -> bool:
    return (not method.startswith("rosd"), method) < (not other.startswith("rosd"), other)


def paired_table(scores: dict) -> pd.DataFrame:
    """Paired differences on the same problems, per benchmark, with 95% intervals: every trained
    (method, target) against base, and each pair of methods trained on the same target once, the
    rosd variant (else the first by name) minus the other."""
    rows = []
    for (method, target, benchmark), (_, matrix) in scores.items():
        if target == BASE_TARGET:
            continue
        baselines = [(m, t) for (m, t, b) in scores if b == benchmark and (t == BASE_TARGET or (t == target and _minuend_first(method, m)))]
        for other, other_target in sorted(baselines, key=lambda mt: (mt[1] != BASE_TARGET, mt[0])):
            baseline = scores[(other, other_target, benchmark)][1]
            common = matrix.columns.intersection(baseline.columns)
            difference, low, high = paired_difference(matrix[common].to_numpy(), baseline[common].to_numpy())
            rows.append({"method": method, "baseline": other, "target": target, "benchmark": benchmark,
                         "in_domain": benchmark == target, "problems": len(common),
                         "difference": difference, "low": low, "high": high})  # fmt: skip
    return pd.DataFrame(rows, columns=["method", "baseline", "target", "benchmark", "in_domain", "problems", "difference", "low", "high"])


def _label(benchmark: str, target: str) -> str:
    return f"{benchmark} ({'ID' if benchmark == target else 'OOD'})"


def wide_intervals(long: pd.DataFrame, keys: list[str], value: str, signed: bool = False) -> pd.DataFrame:
    """``long`` (`interval_table`, `paired_table`) as one row per ``keys`` and one column per
    benchmark label, in-domain first, each cell "value [low, high]"; base's cells fill every label
    of their benchmark, as in the comparison."""
    if long.empty:
        return pd.DataFrame(columns=keys)
    trained = long[long["target"] != BASE_TARGET]
    labels_of = {b: sorted({_label(b, t) for t in trained.loc[trained["benchmark"] == b, "target"]}) or [f"{b} (OOD)"]
                 for b in long["benchmark"].unique()}  # fmt: skip
    sign = "+" if signed else ""
    cells: dict[tuple, dict[str, str]] = {}
    for row in long.to_dict("records"):
        base = row["target"] == BASE_TARGET
        text = f"{row[value]:{sign}.3f} [{row['low']:{sign}.3f}, {row['high']:{sign}.3f}]"
        for label in labels_of[row["benchmark"]] if base else [_label(row["benchmark"], row["target"])]:
            cells.setdefault(tuple(row[k] for k in keys), {})[label] = text
    table = pd.DataFrame.from_dict(cells, orient="index").fillna("")
    table = table[sorted(table.columns, key=lambda label: (label.endswith("(OOD)"), label))]
    table.index = pd.MultiIndex.from_tuples(table.index, names=keys)
    order = sorted(table.index, key=lambda key: (key[keys.index("target")] != BASE_TARGET, key))
    return table.reindex(order).reset_index()


def localization_table(rounds: pd.DataFrame) -> pd.DataFrame:
    """Per (method, target): localization metrics averaged over rounds and seeds, nulls skipped."""
    numeric = rounds.reindex(columns=["method", "target", "seed", *LOCALIZATION])
    numeric[LOCALIZATION] = numeric[LOCALIZATION].apply(pd.to_numeric, errors="coerce")
    grouped = numeric.groupby(["method", "target"])
    table = grouped[LOCALIZATION].mean()
    table.insert(0, "seeds", grouped["seed"].nunique())
    return table.reset_index()


def quote_offset_table(rounds: pd.DataFrame) -> pd.DataFrame:
    """Per (method, target, offset): the found quotes of wrong rollouts that start ``offset`` lines
    after (negative: before) the true first error, summed over rounds and seeds (world tasks only)."""
    columns = ["method", "target", "offset", "count"]
    if QUOTE_OFFSETS not in rounds:
        return pd.DataFrame(columns=columns)
    counts = [
        {"method": method, "target": target, "offset": int(offset), "count": int(count)}
        for method, target, histogram in rounds[["method", "target", QUOTE_OFFSETS]].itertuples(index=False)
        if isinstance(histogram, dict)
        for offset, count in histogram.items()
    ]
    table = pd.DataFrame(counts, columns=columns)
    return table.groupby(columns[:3], as_index=False)["count"].sum()


def markdown_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub pipe table with padded columns, so the raw text reads as a table too."""

    def text(value) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value).replace("|", "\\|")

    rows = [[text(c) for c in df.columns]]
    rows += [[text(v) for v in row] for row in df.itertuples(index=False)]
    widths = [max(3, *(len(row[i]) for row in rows)) for i in range(len(df.columns))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines) + "\n"


def write_tables(exp_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Write the experiment's tables to ``out_dir``; returns the paths written. Every input is read
    and checked before the first table is written, so a bad one (named in the error) leaves the
    previous tables as they were."""
    rounds, evals = collect(exp_dir)
    comparison = comparison_table(evals)
    localization = localization_table(rounds)
    ks = evals["k"].dropna().unique() if "k" in evals else []
    metric = f"mean@{int(ks[0])}" if len(ks) == 1 else "mean@k"
    scores = final_scores(exp_dir, evals)
    intervals, paired = interval_table(scores), paired_table(scores)
    markdown = (
        f"## Comparison: {metric} at the final evaluated round (mean ± std over seeds)\n\n"
        "ID = in-domain (the benchmark is the method's train target), OOD = out-of-domain. "
        "base is the untrained θ0 and appears in every benchmark column.\n\n"
        f"{markdown_table(comparison)}\n"
        f"## {metric} with its 95% interval (bootstrap over problems and seeds)\n\n"
        f"{markdown_table(wide_intervals(intervals, ['method', 'target', 'round', 'seeds'], 'mean'))}\n"
        "## Paired differences on the same problems: method − baseline, 95% interval\n\n"
        "An interval that excludes 0 is a difference this many problems and seeds resolve.\n\n"
        f"{markdown_table(wide_intervals(paired, ['method', 'baseline', 'target'], 'difference', signed=True))}\n"
        "## Localization (mean over rounds and seeds)\n\n"
        f"{markdown_table(localization)}"
    )
    out = Path(out_dir)
    files = {
        "rounds.csv": rounds.drop(columns=[QUOTE_OFFSETS], errors="ignore").to_csv(index=False),
        "evals.csv": evals.to_csv(index=False),
        "comparison.csv": comparison.to_csv(index=False),
        "localization.csv": localization.to_csv(index=False),
        "intervals.csv": intervals.to_csv(index=False),
        "paired.csv": paired.to_csv(index=False),
        "quote_offsets.csv": quote_offset_table(rounds).to_csv(index=False),
        "comparison.md": markdown,
    }
    for name, text in files.items():
        with atomic_path(out / name) as tmp:  # readers never see a half-written table
            tmp.write_text(text, encoding="utf-8")
    return [out / name for name in files]
