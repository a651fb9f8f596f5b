"""Fixtures shared by test files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_run import run


@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> Path:
    """The directory of one uninterrupted run of tests/configs/tiny.yaml: the pipeline tests read
    it, the fault suite ends equal to it, the SLURM run's tables match it."""
    workdir = tmp_path_factory.mktemp("pipeline")
    run(workdir)
    return workdir
