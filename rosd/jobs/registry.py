"""The one registry of the pipeline's stages: each `rosd` subcommand's function, its file arguments,
the files it reads, and the config keys it reads.

Everything that needs these facts derives them from here: the `rosd` command's parser and its
input checks (rosd/cli.py), the stage worker's warm-up (rosd/jobs/worker.py), and the settings the
Snakemake rules pass to each job (workflow/rules/common.smk). A stage receives only the keys it
reads, so Snakemake's parameter check reruns exactly the jobs a config change affects: changing an
evaluation setting reruns evaluation, never a rollout or a training step.

Functions are named as "module:function" and imported only when the stage runs, so planning a
workflow imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rosd.method.presets import needs_reflection

ALL = None  # a whole block of keys
# A stage's log lines, as the `rosd` command writes them and a resident block (rosd/jobs/blocks.py) too.
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


@dataclass(frozen=True)
class Except:
    """Every key of a config section but these (keys that only choose which jobs run)."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class Reads:
    """The config keys one job of a stage reads, and where they sit in its settings.

    ``top``: keys of a config section placed at the settings' top level ({"model": ("device",)});
    ``sections``: config sections (ALL, some keys, or ``Except``) kept under their own name;
    ``method``/``train``: keys of the job's resolved method (rosd.method.presets.resolve), without
    and inside its ``train`` block; ``reflecting``: sections read only when the method reflects;
    ``job``: the job's own coordinates (seed, round, names), given by the caller.
    """

    top: dict = field(default_factory=dict)
    sections: dict = field(default_factory=dict)
    method: tuple | None = ()
    train: tuple | None = ()
    reflecting: tuple[str, ...] = ()
    job: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stage:
    """One `rosd` subcommand the rules run. ``reads`` None with ``settings`` True: its settings are
    a plan made of other stages' settings (run-rounds)."""

    function: str  # "module:function"
    files: tuple[str, ...]  # file arguments, in order: --model, --out, ...
    inputs: tuple[str, ...]  # the file arguments it reads: each must exist before it starts
    reads: Reads | None = None
    settings: bool = True  # whether it takes --settings

    @property
    def module(self) -> str:
        return self.function.split(":")[0]

    def load(self):
        """The stage's function, its module imported now."""
        import importlib

        module, function = self.function.split(":")
        return getattr(importlib.import_module(module), function)


MODEL = ("device", "dtype", "enable_thinking")
ROUND_JOB = ("seed", "round")
# What rollouts read of the method's train block: the batch, the group size and the sampling.
SAMPLING_KEYS = ("batch_prompts", "rollouts_per_prompt", "steps_per_round", "temperature", "top_p", "top_k", "max_new_tokens")
# What reflect reads of it: the group size its input must have, the group filter and sibling choice,
# the teacher prompt's cap.
REFLECT_KEYS = ("rollouts_per_prompt", "group_filter", "skip_no_success", "sibling", "teacher_prompt_max_tokens")
# What rollouts and evaluation read of data: the over-long prompt filter (rosd.stages.data.drop_overlong_prompts).
PROMPT_FILTER = ("max_prompt_tokens",)
EVALUATION = dict(
    top={"model": MODEL},
    sections={"evaluation": Except(("every_steps",)), "generation": ALL, "grading": ALL, "data": PROMPT_FILTER},
)

STAGES: dict[str, Stage] = {
    "prepare-data": Stage(
        "rosd.stages.data:prepare_data", ("name", "split", "out"), (),
        Reads(top={"data": ("source", "train_size", "test_size", "seed")}),
    ),
    "init-model": Stage("rosd.stages.data:init_model", ("out",), (), Reads(top={"model": ALL})),
    "rollouts": Stage(
        "rosd.stages.rollouts:run_rollouts", ("model", "data", "out"), ("model", "data"),
        Reads(top={"model": MODEL}, sections={"generation": ALL, "data": PROMPT_FILTER}, train=SAMPLING_KEYS, job=ROUND_JOB),
    ),
    "grade": Stage(
        "rosd.stages.rollouts:run_grade", ("rollouts", "out"), ("rollouts",),
        Reads(sections={"grading": ALL}, train=("rollouts_per_prompt",)),  # the group size its input must have
    ),
    "reflect": Stage(
        "rosd.stages.reflect:run_reflect", ("model", "graded", "out"), ("model", "graded"),
        Reads(
            top={"model": MODEL}, method=("objective", "teacher_context", "mask"), train=REFLECT_KEYS,
            reflecting=("reflection", "generation"), job=ROUND_JOB,
        ),
    ),
    "teacher-score": Stage(
        "rosd.stages.teacher:run_teacher_score", ("teacher", "student", "reflections", "out"), ("teacher", "student", "reflections"),
        Reads(top={"model": MODEL}, method=("objective", "teacher", "loss"), train=("temperature", "micro_batch", "token_chunk"), job=ROUND_JOB),
    ),
    "distill": Stage(
        "rosd.stages.distill:run_distill", ("model", "reflections", "teacher_scores", "out_model", "out_metrics"),
        ("model", "reflections", "teacher_scores"),
        Reads(top={"model": MODEL}, method=ALL, train=ALL, job=(*ROUND_JOB, "method_name", "target")),
    ),
    "keep-checkpoint": Stage(
        "rosd.training.checkpoints:keep_checkpoint", ("checkpoint", "out"), ("checkpoint",),
        Reads(top={"model": ("dtype",)}, job=("resumable",)),
    ),
    "run-rounds": Stage("rosd.jobs.blocks:run_rounds", ("model", "teacher", "data", "out_model", "out_metrics"), ("model", "teacher", "data")),
    "evaluate": Stage(
        "rosd.stages.evaluate:run_evaluate", ("model", "data", "out_samples", "out_summary"), ("model", "data"),
        Reads(**EVALUATION, job=(*ROUND_JOB, "method", "target", "benchmark")),
    ),
    "evaluate-checkpoint": Stage(
        "rosd.stages.evaluate:run_evaluate_checkpoint", ("model", "data_dir", "out_dir"), ("model", "data_dir"),
        Reads(**EVALUATION, job=(*ROUND_JOB, "method", "target", "benchmarks")),
    ),
    "aggregate": Stage("rosd.reporting.aggregate:write_tables", ("exp_dir", "out_dir"), ("exp_dir",), settings=False),
    "plots": Stage(
        "rosd.reporting.plots:write_plots",
        ("rounds", "evals", "comparison", "intervals", "paired", "localization_table", "quote_offsets_table", "out_dir", "out_page"),
        ("rounds", "evals", "comparison", "intervals", "paired", "localization_table", "quote_offsets_table"),
        settings=False,
    ),
}  # fmt: skip

# The round's stages in order, by the names a block of rounds keys their settings with (rosd/jobs/blocks.py).
ROUND_STAGES = {"rollouts": "rollouts", "grade": "grade", "reflect": "reflect", "teacher": "teacher-score", "distill": "distill"}
# Commands the `rosd` command hands to a stage worker when Snakemake started one: the stages and `track`.
DELEGATED = frozenset({*STAGES, "track"})


def _section(values: dict, keys) -> dict:
    """``values`` restricted to ``keys`` (ALL, a tuple, or Except); absent keys are skipped."""
    if keys is ALL:
        return dict(values)
    if isinstance(keys, Except):
        return {k: v for k, v in values.items() if k not in keys.keys}
    return {k: values[k] for k in keys if k in values}


def stage_settings(stage: str, config: dict, method: dict | None = None, /, **job) -> dict:
    """The settings of one job of ``stage``: only the config keys it reads (``STAGES[stage].reads``).

    ``method`` is the job's resolved method (rosd.method.presets.resolve) for a round stage;
    ``job`` its coordinates, exactly the stage's ``reads.job``.
    """
    reads = STAGES[stage].reads
    if reads is None:
        raise ValueError(f"stage {stage} has no settings of its own")
    if set(job) != set(reads.job):
        raise TypeError(f"stage {stage} takes the job coordinates {sorted(reads.job)}, not {sorted(job)}")
    settings: dict = {}
    for section, keys in reads.top.items():
        settings.update(_section(config[section], keys))
    settings.update(job)
    for section, keys in reads.sections.items():
        settings[section] = _section(config[section], keys)
    if method is not None:
        method = dict(method)
        train = method.pop("train")
        if reads.method != ():
            settings["method"] = _section(method, reads.method)
        if reads.train != ():
            settings["train"] = _section(train, reads.train)
        if needs_reflection(method):
            settings.update({section: config[section] for section in reads.reflecting})
    return settings


def data_settings(config: dict, name: str) -> dict:
    """A prepare-data job's settings: the data keys, plus its own ``data.datasets`` entry when it has
    one, so adding or changing another dataset never reruns this one (nor the training that reads it)."""
    settings = stage_settings("prepare-data", config)
    if name in config["data"]["datasets"]:
        settings["datasets"] = {name: config["data"]["datasets"][name]}
    return settings


def init_model_settings(config: dict) -> dict:
    """init-model's settings: the model block, ``model.adapter`` only when set (adding the key to
    the schema reruns no existing experiment)."""
    return {k: v for k, v in stage_settings("init-model", config).items() if k != "adapter" or v}
