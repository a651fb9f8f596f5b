"""The conda environments name the same packages, with the same version bounds, as pyproject.toml.

CI has no conda channels, so nothing here creates an environment: the files are parsed and compared
with the pip requirements they mirror (environment.yml: dependencies + `test`, `cpu-chat`; workflow/envs/cpu.yaml:
dependencies + `train`; workflow/envs/gpu.yaml: dependencies + `gpu`), and every env file a rule
names exists with its post-deploy script.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# conda-forge names of PyPI packages, where they differ
PIP_NAME = {"pytorch": "torch", "snakemake-minimal": "snakemake", "matplotlib-base": "matplotlib"}


def pip_requirements(*extras: str) -> dict[str, str]:
    """name -> version specifier of the dependencies plus the extras (self-references expanded)."""
    out = {}
    for line in PROJECT["dependencies"] + [r for e in extras for r in PROJECT["optional-dependencies"][e]]:
        req = Requirement(line)
        if req.name == PROJECT["name"]:
            out.update(pip_requirements(*req.extras))
        else:
            out[req.name] = str(req.specifier)
    return out


def conda_requirements(path: Path) -> dict[str, str]:
    """name -> version specifier of an env file's packages (conda and pip), in PyPI names."""
    out = {}
    for entry in yaml.safe_load(path.read_text())["dependencies"]:
        for line in entry["pip"] if isinstance(entry, dict) else [entry]:
            if line.startswith("-e"):
                continue
            req = Requirement(line)
            if req.name not in ("python", "pip"):
                out[PIP_NAME.get(req.name, req.name)] = str(req.specifier)
    return out


@pytest.mark.parametrize(
    "env, extras",
    [("environment.yml", ("test", "cpu-chat")), ("workflow/envs/cpu.yaml", ("train",)), ("workflow/envs/gpu.yaml", ("gpu",))],
)
def test_env_file_mirrors_pyproject(env, extras):
    assert conda_requirements(REPO / env) == pip_requirements(*extras)


def test_datasets_is_a_dependency_of_every_env():
    """rosd.evaluation.datasets loads every real benchmark through Hugging Face datasets, in every environment."""
    assert "datasets" in pip_requirements()
    for env in ("environment.yml", "workflow/envs/cpu.yaml", "workflow/envs/gpu.yaml"):
        assert "datasets" in conda_requirements(REPO / env), env


def test_gpu_env_installs_from_pypi_only():
    """vLLM pins its CUDA build of torch: a conda pytorch beside it would conflict."""
    conda_side = [d for d in yaml.safe_load((REPO / "workflow/envs/gpu.yaml").read_text())["dependencies"] if isinstance(d, str)]
    assert {Requirement(d).name for d in conda_side} == {"python", "pip"}
    assert "vllm" in pip_requirements("gpu")


def test_every_rule_env_exists_with_its_post_deploy_script():
    rules = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    named = set(re.findall(r'"\.\./envs/(\w+)\.yaml"', rules))
    assert named == {"cpu", "gpu"}
    for env in named:
        assert (REPO / "workflow" / "envs" / f"{env}.yaml").exists()
        script = (REPO / "workflow" / "envs" / f"{env}.post-deploy.sh").read_text()
        assert 'pip install --no-deps -e "${ROSD_SOURCE' in script
