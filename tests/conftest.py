"""Fixtures shared by test files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pipeline_run import run

# Two pytest-xdist workers on two cores: one torch thread each, for them and what they start. With
# torch's default of one per core, OpenMP's waiting threads spin on each other's cores (the fast lane
# took twice as long as in one process).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(items):
    """Every test that reads a finished pipeline run is a pipeline test too."""
    for item in items:
        if "finished" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.pipeline)


@pytest.fixture(autouse=True)
def _no_process_outside_the_pipeline_lane(request, monkeypatch):
    """The fast lane (`pytest -m "not pipeline"`) starts no process: a test that does must carry the
    ``pipeline`` marker, or it fails here instead of slowing the lane in silence."""
    if request.node.get_closest_marker("pipeline") is None:

        def refuse(*args, **kwargs):
            raise AssertionError(f"{request.node.nodeid} starts a process ({args[0] if args else kwargs.get('args')!r}): mark it @pytest.mark.pipeline")

        monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> Path:
    """The directory of one uninterrupted run of tests/configs/tiny.yaml: the pipeline tests read
    it, the fault suite ends equal to it, the SLURM run's tables match it."""
    workdir = tmp_path_factory.mktemp("pipeline")
    run(workdir)
    return workdir
