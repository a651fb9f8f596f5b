"""Same config, same seed, same bytes: two tiny runs agree on every file under results/, the
teacher targets, kept models, evaluations, tables and plots included (issue 25, item 5), not only on
the tables.

Left out of the comparison, each for what legitimately differs between two runs:
  logs/        job logs and the stage worker's log: timestamps, process ids, durations
  benchmarks/  Snakemake's per-job benchmark files: seconds and memory measured while the job ran
  mlflow.db    MLflow's store: random run ids and wall-clock start and end times
  mlartifacts/ MLflow's artifacts, in folders named by those run ids (their contents repeat the
               run's files, which are compared themselves)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_run import EXP, run

RESULTS = EXP.parent
EXCLUDED_DIRS = {"logs", "benchmarks", "mlartifacts"}
EXCLUDED_FILES = {"mlflow.db"}


def _compared_files(results: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(results)): path.read_bytes()
        for path in sorted(results.rglob("*"))
        if path.is_file() and path.name not in EXCLUDED_FILES and not EXCLUDED_DIRS & set(path.relative_to(results).parts)
    }


@pytest.mark.pipeline
def test_two_runs_with_the_same_seed_write_the_same_bytes(finished, tmp_path):
    run(tmp_path)
    first, second = _compared_files(finished / RESULTS), _compared_files(tmp_path / RESULTS)
    assert sorted(first) == sorted(second)
    assert any(name.endswith("teacher.pt") for name in first)  # the file torch.save once made differ
    assert [name for name in first if first[name] != second[name]] == []
