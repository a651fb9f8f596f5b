"""Config checking: each bad value is one line naming the key, the value and what is allowed."""

from pathlib import Path

import pytest
import yaml

from rosd.jobs.config import ConfigError, check

REPO = Path(__file__).resolve().parent.parent
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_default_config_is_valid():
    check(DEFAULT)


@pytest.mark.parametrize(
    "change, line",
    [
        ({"rounds": 0}, "config error: rounds = 0: must be a number >= 1"),
        ({"loss": {"alpha": 1.5}}, "config error: loss.alpha = 1.5: must be a number <= 1"),
        ({"methods": ["rosd", "ppo"]}, "config error: methods.1 = 'ppo': must be one of 'base', 'rosd', 'rosd_solution_and_reflection', 'rosd_reflection_only', 'rosd_no_mask', 'sdpo', 'opsd', 'grpo'"),
        ({"train": {"lr": "fast"}}, "config error: train.lr = 'fast': must be of type number"),
        ({"model": {"device": "tpu"}}, "config error: model.device = 'tpu': must be cpu, cuda, cuda:N or mps"),
        ({"evaluation": {"sample": 4}}, "config error: unknown key evaluation.sample: allowed are every_steps, max_new_tokens, samples, temperature, top_p"),
    ],
)
def test_bad_value_is_one_clear_line(change, line):
    with pytest.raises(ConfigError) as error:
        check({**DEFAULT, **change})
    assert str(error.value) == line


def test_every_bad_value_is_reported():
    with pytest.raises(ConfigError) as error:
        check({**DEFAULT, "rounds": 0, "seeds": [-1]})
    assert len(str(error.value).splitlines()) == 2


def test_every_schema_key_is_documented():
    schema = yaml.safe_load((Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml").read_text())

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            if "properties" in sub:
                yield from walk(sub, path + [key])
            else:
                yield path + [key], sub

    undocumented = [".".join(p) for p, sub in walk(schema, []) if "description" not in sub]
    assert not undocumented, f"schema keys without a description: {undocumented}"


def _filled(**changes) -> dict:
    """The default config with `changes`, its defaults filled in as the Snakefile's validate does."""
    from snakemake.utils import validate

    config = {**yaml.safe_load(yaml.safe_dump(DEFAULT)), **changes}
    validate(config, str(Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"))
    return config


@pytest.mark.parametrize(
    "override, line",
    [
        ({"rosd": {"teacher": "nonsense"}}, "config error: method_overrides.rosd.teacher = 'nonsense': must be one of 'frozen', 'ema', 'live', None"),
        ({"rosd": {"mask": "nonsense"}}, "config error: method_overrides.rosd.mask = 'nonsense': must be one of 'first_error', 'full'"),
        ({"rosd": {"alphaa": 0.3}}, "config error: unknown key method_overrides.rosd.alphaa: allowed are ema_rate, grpo, loss, mask, objective, teacher, teacher_context, train"),
        ({"rosd": {"loss": {"colour": 1}}}, "config error: unknown key method_overrides.rosd.loss.colour: allowed are alpha, entry_clip, support, topk"),
        ({"rosd": {"loss": {"support": "nonsense"}}}, "config error: method_overrides.rosd.loss.support = 'nonsense': must be one of 'topk_tail', 'full', 'sampled_token'"),
        ({"rosd": {"loss": {"alpha": 2.0}}}, "config error: method_overrides.rosd.loss.alpha = 2.0: must be a number <= 1"),
        ({"rosd": {"train": {"lr": -1}}}, "config error: method_overrides.rosd.train.lr = -1: must be a number > 0"),
        ({"rosd": {"objective": "nonsense"}}, "config error: method_overrides.rosd.objective = 'nonsense': must be one of 'distill', 'grpo', None"),
        ({"opsd": {"teacher_context": "nonsense"}}, "config error: method_overrides.opsd.teacher_context = 'nonsense': must be one of 'reflection_else_solution', 'solution_and_reflection', 'reflection', 'solution', 'reference', None"),
        ({"grpo": {"grpo": {"clip_low": -0.2}}}, "config error: method_overrides.grpo.grpo.clip_low = -0.2: must be a number >= 0"),
        ({"sdpo": {"ema_rate": 5}}, "config error: method_overrides.sdpo.ema_rate = 5: must be a number <= 1"),
    ],
)
def test_method_overrides_are_checked_after_resolving(override, line):
    from rosd.jobs.config import check_methods

    with pytest.raises(ConfigError) as error:
        check_methods(_filled(method_overrides=override))
    assert str(error.value) == line


def test_valid_overrides_and_every_preset_pass():
    from rosd.jobs.config import check_methods
    from rosd.method.presets import PRESETS

    check_methods(_filled(methods=list(PRESETS), method_overrides={"rosd": {"loss": {"alpha": 1.0}}}))


def test_an_empty_override_is_one_line():
    with pytest.raises(ConfigError) as error:
        check({**DEFAULT, "method_overrides": {"rosd": None}})
    assert str(error.value) == "config error: method_overrides.rosd = None: must be of type object"


def test_unknown_targets_and_benchmarks_are_named_before_any_job():
    from rosd.jobs.config import check_names

    with pytest.raises(ConfigError) as error:
        check_names(_filled(targets=["maths"], benchmarks=["math", "aime24"]))
    lines = str(error.value).splitlines()
    assert lines == [
        "config error: targets.0 = 'maths': must be a world task family or a data.datasets entry: math, math_long, math_paths, mcq, tooluse",
        "config error: benchmarks.1 = 'aime24': must be a world task family or a data.datasets entry: math, math_long, math_paths, mcq, tooluse",
    ]


@pytest.mark.parametrize(
    "files, problem",
    [
        ({}, "no config.json in it (a Hugging Face model directory is expected)"),
        ({"config.json": ""}, "its config.json does not parse"),
        ({"config.json": "[1]"}, "its config.json is not a JSON object"),
        ({"config.json": '{"model_type": "qwen2"}'}, "its tokenizer does not load"),
    ],
)
def test_a_local_model_directory_must_hold_a_config_and_a_tokenizer(tmp_path, files, problem):
    from rosd.jobs.config import check_names

    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as error:
        check_names(_filled(model={"init": "path", "path": str(tmp_path)}))
    assert str(error.value).startswith(f"config error: model.path = {str(tmp_path)!r}: {problem}")
    assert len(str(error.value).splitlines()) == 1


def test_the_shipped_model_passes_the_model_check():
    from rosd.jobs.config import check_names

    check_names(_filled(model={"init": "path", "path": str(Path(__file__).resolve().parent.parent / "rosd" / "world" / "theta0")}))


def test_warm_start_settings_are_the_rules_arguments_and_a_bad_one_is_one_line():
    import inspect

    from rosd.world.warm_start import LR_SCHEDULES, MIXES, run_warm_start

    schema = yaml.safe_load((Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml").read_text())
    keys = schema["properties"]["model"]["properties"]["warm_start"]["properties"]
    assert list(keys) == [name for name in inspect.signature(run_warm_start).parameters if name != "out_dir"]
    assert keys["mix"]["enum"] == list(MIXES) and keys["lr_schedule"]["enum"] == list(LR_SCHEDULES)
    with pytest.raises(ConfigError) as error:
        check({**DEFAULT, "model": {"init": "warm_start", "warm_start": {"lr_schedule": "cosine", "stepz": 3}}})
    assert str(error.value).splitlines() == [
        "config error: unknown key model.warm_start.stepz: allowed are batch_size, device, hidden, init_from, layers, "
        "log_every, lora_modules, lora_r, lr, lr_schedule, mix, own_family, own_tasks, seed, snapshot_every, steps, threads, vocab_size, warmup",
        "config error: model.warm_start.lr_schedule = 'cosine': must be one of 'constant', 'linear'",
    ]


def _filled(**change) -> dict:
    """The default config with the schema's defaults filled in (as the Snakefile's validate does)."""
    from snakemake.utils import validate

    config = {**yaml.safe_load((REPO / "config" / "config.yaml").read_text()), **change}
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return config


def test_a_method_reading_a_solution_a_target_lacks_is_one_line():
    from rosd.jobs.config import check_runnable

    config = _filled(methods=["base", "opsd"], targets=["tooluse"])
    config["data"]["datasets"] = {"tooluse": {"adapter": "tooluse", "path": "somewhere"}}
    with pytest.raises(ConfigError, match=r"^config error: method opsd reads the dataset's reference solution, and target tooluse \(tooluse\) has none"):
        check_runnable(config)
    check_runnable(_filled(methods=["base", "opsd"]))  # the world's tasks have solutions


def test_an_ema_teacher_with_lora_is_refused_before_any_job():
    from rosd.jobs.config import check_runnable

    config = _filled(methods=["sdpo"])
    config["train"]["lora"] = {"r": 8}
    with pytest.raises(ConfigError, match="^config error: train.lora cannot train a method with an EMA teacher"):
        check_runnable(config)


def test_resident_blocks_hold_every_trainer_beside_either_engine():
    """A sharded trainer (held across rounds by every training process) and a LoRA student (held as
    it trains) both run resident, with the HF engine or vLLM."""
    from rosd.jobs.config import check_runnable

    config = _filled(methods=["base", "rosd"])
    config["execution"]["resident"] = True
    for backend in ("hf", "vllm"):
        config["generation"]["backend"] = backend
        config["train"].update(launcher="accelerate", num_processes=2, lora=None)
        check_runnable(config)
        config["train"].update(launcher="none", num_processes=1, lora={"r": 8, "alpha": 16, "target_modules": ["q_proj"]})
        check_runnable(config)


def test_rounds_of_a_target_are_counted_or_refused_in_one_line(tmp_path):
    from rosd.jobs.planning import rounds_of

    assert rounds_of(_filled(rounds=7), "math") == 7
    config = _filled(rounds={"math": {"epochs": 2}})
    config["data"]["train_size"] = 12
    assert rounds_of(config, "math") == (12 // config["train"]["batch_prompts"]) * 2
    with pytest.raises(ConfigError, match="^config error: rounds has no entry for target 'mcq'"):
        rounds_of(_filled(rounds={"math": 3}), "mcq")
    config = _filled(rounds={"real": {"epochs": 1}})
    config["data"]["datasets"] = {"real": {"adapter": "jsonl", "path": str(tmp_path / "missing")}}
    with pytest.raises(ConfigError, match=r"^config error: rounds.real: cannot count the train split"):
        rounds_of(config, "real")


def test_a_string_where_a_mapping_belongs_says_how_to_write_one():
    with pytest.raises(ConfigError) as error:
        check({**DEFAULT, "loss": "{alpha: 0.3"})  # what snakemake --config 'loss={alpha: 0.3' passes: not YAML
    assert str(error.value) == (
        "config error: loss = '{alpha: 0.3': must be of type object (write a mapping as YAML, {name: value, ...}: "
        "in a file added with --configfile, or as --config 'loss={...}')"
    )


def test_nested_command_line_values_are_typed_as_a_config_file_types_them():
    from rosd.jobs.config import typed_command_line_config

    # What Snakemake's --config passes for: loss={"alpha": 0.3} seeds=[0,1] data={max_prompt_tokens: null, ...} rounds=2 experiment=x
    passed = {
        "loss": {"alpha": "0.3"},
        "seeds": ["0", "1"],
        "data": {"max_prompt_tokens": "null", "datasets": {"aime24": {"adapter": "aime", "hub": "math-ai/aime24"}}},
        "evaluation": {"temperature": "1e-3"},
        "tracking": {"mlflow": "false"},
        "rounds": 2,
        "experiment": "x",
    }
    typed = typed_command_line_config(passed)
    assert typed == {
        "loss": {"alpha": 0.3},
        "seeds": [0, 1],
        "data": {"max_prompt_tokens": None, "datasets": {"aime24": {"adapter": "aime", "hub": "math-ai/aime24"}}},
        "evaluation": {"temperature": "1e-3"},  # YAML 1.1 reads 1e-3 as a string, as in a config file
        "tracking": {"mlflow": False},
        "rounds": 2,
        "experiment": "x",
    }
    check({**DEFAULT, **{key: typed[key] for key in ("loss", "seeds", "tracking", "rounds", "experiment")}})


@pytest.mark.pipeline
def test_a_mapping_and_a_list_given_with_config_reach_the_jobs(tmp_path):
    import subprocess

    from pipeline_run import environment, snakemake_command

    command = snakemake_command(tmp_path, "-n", "-p", "--config", 'loss={"alpha": 0.3}', "seeds=[0,1]")
    done = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "config error" not in done.stderr
    distill = [line for line in done.stdout.splitlines() if " distill " in line and "rosd --log" in line]
    assert any("/rosd/math/seed1/" in line for line in distill)  # seeds [0, 1]: a run per seed
    assert all('"alpha": 0.3' in line for line in distill if "/rosd/" in line), distill  # rosd keeps the config's alpha
