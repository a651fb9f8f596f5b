"""The paper presets carry the reference's budgets, and the plan refuses what the reference would not run."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rosd.jobs.planning import local_train_rows, planned_steps, rounds_for

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
PRESETS = [REPO / "config" / name for name in ("paper_qwen3_8b.yaml", "paper_qwen3_4b.yaml")]
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real benchmark data not found at {SHARED}")


@needs_shared
@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_paper_preset_steps_are_the_reference_budgets(preset):
    """ref run_*_ood_all.sh: 10 epochs of floor(N / 32) steps over each SciKnowEval train split."""
    rounds = yaml.safe_load(preset.read_text())["rounds"]
    expected = {"biology": 140, "chemistry": 590, "material": 260, "physics": 220}
    for domain, steps in expected.items():
        assert planned_steps(local_train_rows(SHARED / "sciknoweval" / domain), 32, 10) == steps
        assert rounds[f"sciknoweval_{domain}"] == steps
    assert rounds["tooluse"] == {"epochs": 5}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_paper_presets_use_the_reference_budgets(preset):
    config = yaml.safe_load(preset.read_text())
    assert config["methods"] == ["base", "rosd", "sdpo", "grpo"]
    assert config["reflection"]["max_new_tokens"] == 8192 and config["reflection"]["prompt_max_tokens"] == 2048
    assert config["train"]["reduction"] == "reference" and config["train"]["teacher_prompt_max_tokens"] == 10240
    assert config["evaluation"]["every_steps"] == 10
    assert config["train"]["steps_per_round"] == 1  # exactly on-policy, as the reference
    assert config["data"]["max_prompt_tokens"] == 2048  # ref filter_overlong_prompts, max_prompt_length
    assert config["grading"]["mode"] == "reference"


def test_rounds_hold_the_planned_steps():
    assert planned_steps(450, 32, 10) == 140
    assert rounds_for(140, 1) == 140 and rounds_for(140, 4) == 35 and rounds_for(141, 4) == 36


def test_train_rows_of_json_and_jsonl_files(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"a": 1}\n\n{"a": 2}\n')
    (tmp_path / "other.json").write_text('[{"a": 1}, {"a": 2}, {"a": 3}]')
    assert local_train_rows(tmp_path) == 2
    assert local_train_rows(tmp_path / "other.json") == 3
    with pytest.raises(FileNotFoundError, match="no test.jsonl"):
        local_train_rows(tmp_path, "test")


def _dry_run(tmp_path, overlay: dict) -> subprocess.CompletedProcess:
    config = tmp_path / "overlay.yaml"
    config.write_text(yaml.safe_dump(overlay))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n",
               "--cores", "1", "--configfile", str(REPO / "tests" / "configs" / "tiny.yaml"), str(config)]
    return subprocess.run(command, capture_output=True, text=True)


@pytest.mark.pipeline
def test_opsd_on_a_target_without_solutions_is_refused(tmp_path):
    overlay = {"methods": ["base", "opsd"], "targets": ["physics"], "benchmarks": ["physics"],
               "data": {"datasets": {"physics": {"adapter": "sciknoweval", "domain": "physics", "path": str(SHARED / "sciknoweval")}}}}
    result = _dry_run(tmp_path, overlay)
    assert result.returncode != 0
    assert "config error: method opsd reads the dataset's reference solution, and target physics (sciknoweval) has none" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.pipeline
def test_rounds_by_epochs_are_counted_before_any_job(tmp_path):
    result = _dry_run(tmp_path, {"methods": ["base", "rosd"], "rounds": {"math": {"epochs": 2}}, "data": {"train_size": 12}})
    assert result.returncode == 0, result.stderr[-2000:]
    # floor(12 / 4 prompts a step) x 2 epochs = 6 rounds of rosd
    assert "round6" in result.stdout and "round7" not in result.stdout
