"""The stage registry (rosd/jobs/registry.py): each stage's settings hold exactly the config keys it
declares, so a change reruns the stages that read it and no other; the `rosd` command and the
worker are derived from it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from rosd.cli import _parser
from rosd.jobs.registry import (
    ALL,
    DELEGATED,
    STAGES,
    Except,
    data_settings,
    init_model_settings,
    stage_settings,
)
from rosd.method.presets import needs_reflection, resolve

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(SCHEMA))  # fills in the schema's defaults, as the Snakefile does
    return config


JOBS = {
    "rollouts": {"seed": 1, "round": 2},
    "grade": {},
    "reflect": {"seed": 1, "round": 2},
    "teacher-score": {"seed": 1, "round": 2},
    "distill": {"seed": 1, "round": 2, "method_name": "m", "target": "math"},
    "keep-checkpoint": {"resumable": True},
    "evaluate": {"seed": 1, "round": 2, "method": "m", "target": "math", "benchmark": "mcq"},
    "evaluate-checkpoint": {"seed": 1, "round": 2, "method": "m", "target": "math", "benchmarks": ["mcq"]},
}


def _all_settings(config: dict, method: str) -> dict:
    resolved = resolve(config, method)
    out = {stage: stage_settings(stage, config, resolved, **job) for stage, job in JOBS.items()}
    out["prepare-data"] = data_settings(config, "math")
    out["init-model"] = init_model_settings(config)
    return out


def _leaves(tree: dict, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "_changed"
    if isinstance(value, list):
        return [*value, "x"]
    return 7  # None or an empty mapping


def _declares(stage: str, path: tuple, method: str, config: dict) -> bool:
    """Whether ``stage`` declares that it reads the config key at ``path``."""
    reads = STAGES[stage].reads
    section, key = path[0], path[1] if len(path) > 1 else None

    def covers(keys) -> bool:
        return keys is ALL or (key not in keys.keys if isinstance(keys, Except) else key in keys)

    if section in reads.top or section in reads.sections:
        return covers({**reads.top, **reads.sections}[section])
    if section in reads.reflecting:
        return needs_reflection(resolve(config, method))
    if section == "train":
        return reads.train is ALL or key in reads.train
    if section == "loss":
        return reads.method is ALL or "loss" in reads.method
    return False


# Keys that only pick jobs or say where they run: no stage's settings hold them.
PLAN_ONLY = {"experiment", "methods", "targets", "benchmarks", "seeds", "rounds", "execution", "tracking", "checkpoints", "method_overrides"}


@pytest.mark.parametrize("method", ["rosd", "sdpo"])
def test_a_stage_settings_change_exactly_when_a_key_it_declares_changes(method):
    config = _config()
    before = _all_settings(config, method)
    for path, value in _leaves(config):
        if path[0] in PLAN_ONLY or (path[0] == "data" and path[1] == "datasets"):
            continue
        changed = copy.deepcopy(config)
        node = changed
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = _changed(value)
        after = _all_settings(changed, method)
        for stage in before:
            reads_it = _declares(stage, path, method, config)
            assert (after[stage] != before[stage]) == reads_it, f"{'.'.join(path)} and stage {stage} ({method})"


def test_hand_picked_keys_rerun_only_their_stages():
    config = _config()
    base = _all_settings(config, "rosd")

    def rerun(section, key, value, method="rosd"):
        changed = copy.deepcopy(config)
        changed[section][key] = value
        after, before = _all_settings(changed, method), _all_settings(config, method)
        return sorted(stage for stage in base if after[stage] != before[stage])

    assert rerun("evaluation", "every_steps", 5) == []
    assert rerun("evaluation", "samples", 9) == ["evaluate", "evaluate-checkpoint"]
    assert rerun("train", "lr", 0.5) == ["distill"]
    assert rerun("train", "temperature", 0.5) == ["distill", "rollouts", "teacher-score"]
    assert rerun("generation", "batch_size", 3) == ["evaluate", "evaluate-checkpoint", "reflect", "rollouts"]
    assert rerun("generation", "batch_size", 3, method="sdpo") == ["evaluate", "evaluate-checkpoint", "rollouts"]
    assert rerun("reflection", "temperature", 0.3) == ["reflect"]
    assert rerun("reflection", "temperature", 0.3, method="sdpo") == []
    assert rerun("grading", "mode", "lenient") == ["evaluate", "evaluate-checkpoint", "grade"]
    assert rerun("train", "rollouts_per_prompt", 4) == ["distill", "grade", "reflect", "rollouts"]
    assert rerun("data", "max_prompt_tokens", 2048) == ["evaluate", "evaluate-checkpoint", "rollouts"]
    assert rerun("data", "test_size", 9) == ["prepare-data"]


def test_settings_keep_their_shape():
    """The shapes the stages read (and Snakemake's parameter check compares)."""
    config = _config()
    rosd = resolve(config, "rosd")
    assert stage_settings("grade", config, rosd) == {"grading": config["grading"], "train": {"rollouts_per_prompt": 8}}
    rollouts = stage_settings("rollouts", config, rosd, seed=3, round=4)
    assert sorted(rollouts) == ["data", "device", "dtype", "enable_thinking", "generation", "round", "seed", "train"]
    assert rollouts["data"] == {"max_prompt_tokens": None}
    assert sorted(rollouts["train"]) == sorted(["batch_prompts", "rollouts_per_prompt", "steps_per_round", "temperature", "top_p", "top_k", "max_new_tokens"])
    reflect = stage_settings("reflect", config, rosd, seed=3, round=4)
    assert reflect["reflection"] == config["reflection"] and reflect["method"] == {"objective": "distill", "teacher_context": "reflection_else_solution", "mask": "first_error"}
    assert "reflection" not in stage_settings("reflect", config, resolve(config, "sdpo"), seed=3, round=4)
    evaluate = stage_settings("evaluate", config, seed=0, round=0, method="base", target="all", benchmark="math")
    assert "every_steps" not in evaluate["evaluation"] and evaluate["benchmark"] == "math"
    assert stage_settings("keep-checkpoint", config, resumable=False) == {"resumable": False, "dtype": config["model"]["dtype"]}


def test_wrong_job_coordinates_are_refused():
    with pytest.raises(TypeError, match="takes the job coordinates"):
        stage_settings("rollouts", _config(), resolve(_config(), "rosd"), seed=1)


def test_the_command_line_is_the_registry():
    parser = _parser()
    for name, stage in STAGES.items():
        argv = [name, *(f"--{arg.replace('_', '-')}=x" for arg in stage.files)] + (["--settings={}"] if stage.settings else [])
        args = parser.parse_args(argv)
        assert all(getattr(args, arg) == "x" for arg in stage.files)
        assert set(stage.inputs) <= set(stage.files), name
    assert DELEGATED == {*STAGES, "track"}
