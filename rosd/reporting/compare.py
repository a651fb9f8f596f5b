"""`rosd compare`'s output beside the MLflow table: the aggregate stage's intervals and paired
differences for the same methods and targets, and the table written as CSV and Markdown."""

from __future__ import annotations

import os

import pandas as pd

from rosd.io.files import atomic_path
from rosd.reporting.aggregate import BASE_TARGET, markdown_table, wide_intervals


def interval_sections(exp_dir: str, methods: list[str] | None, targets: list[str] | None) -> str:
    """The aggregate stage's intervals and paired differences (tables/intervals.csv, paired.csv:
    they need every problem's score, which MLflow does not hold), for the same methods and targets."""

    def chosen(table: pd.DataFrame, *columns: str) -> pd.DataFrame:
        keep = pd.Series(True, index=table.index)
        if methods:
            keep &= table[list(columns)].isin(methods).any(axis=1)
        if targets:
            keep &= table["target"].isin([*targets, BASE_TARGET])
        return table[keep]

    tables = os.path.join(exp_dir, "tables")
    sections = [
        ("intervals.csv", "95% intervals (bootstrap over problems and seeds)", ["method", "target", "round", "seeds"], "mean", ("method",)),
        ("paired.csv", "paired differences, method − baseline", ["method", "baseline", "target"], "difference", ("method", "baseline")),
    ]  # fmt: skip
    text = ""
    for name, title, keys, value, columns in sections:
        path = os.path.join(tables, name)
        if os.path.exists(path):
            long = chosen(pd.read_csv(path), *columns)
            text += f"\n{title} ({path}):\n\n{markdown_table(wide_intervals(long, keys, value, signed=value == 'difference'))}"
    return text


def write_compare_outputs(table, markdown: str, prefix: str) -> None:
    """OUT.csv with one "<benchmark (ID|OOD)> <mean|std|seeds>" column per statistic, OUT.md as printed."""
    flat = table.copy()
    flat.columns = [f"{label} {stat}" for label, stat in flat.columns]
    with atomic_path(prefix + ".csv") as tmp:
        flat.reset_index().to_csv(tmp, index=False)
    with atomic_path(prefix + ".md") as tmp:
        tmp.write_text(markdown, encoding="utf-8")
