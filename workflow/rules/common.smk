# Paths, the experiment matrix and each stage's settings. A stage's settings hold only the config
# keys it reads, so changing (say) an evaluation setting reruns evaluation and nothing upstream.
import functools
import json
import shlex
import sys
from types import SimpleNamespace

from rosd.method.presets import evaluation_rounds, needs_reflection, resolve, trains
from rosd.jobs.planning import local_train_rows, planned_steps, round_blocks, rounds_for

EXP = f"results/{config['experiment']}"
# Path templates: f-strings whose values carry the wildcards, so literal braces here are doubled.
RUN = f"{EXP}/runs/{{method}}/{{target}}/seed{{seed}}"
ROUND = f"{RUN}/round{{round}}"
EVAL = f"{EXP}/eval/{{method}}/{{target}}/seed{{seed}}/round{{round}}/{{benchmark}}"
THETA0 = f"{EXP}/models/theta0"


@functools.cache
def method_settings(method):
    """A method's resolved settings (rosd/method/presets.py), once per method: callers only read them."""
    return resolve(config, method)


TRAINED = [m for m in config["methods"] if trains(method_settings(m))]


wildcard_constraints:
    seed=r"\d+",
    round=r"\d+",
    # θ0 is always evaluated (as "base"): it is round 0 of every learning curve.
    method="|".join(sorted(set(config["methods"]) | {"base"})),


def checkpoint_dir(method, target, seed, round):
    """Checkpoint r of a run; checkpoint 0 is θ0."""
    if int(round) == 0:
        return THETA0
    return f"{ROUND}/checkpoint".format(method=method, target=target, seed=seed, round=round)


# The input functions of the rules (Snakemake's linter wants functions here, not among the rules).
def previous_checkpoint(wildcards):
    """Checkpoint r-1: the model a round starts from (rollouts, reflect, the student, distill)."""
    return checkpoint_dir(wildcards.method, wildcards.target, wildcards.seed, int(wildcards.round) - 1)


def teacher_input(wildcards):
    """θ0 for a frozen teacher; otherwise the previous checkpoint, which holds the EMA or live weights."""
    if method_settings(wildcards.method)["teacher"] == "frozen":
        return THETA0
    return previous_checkpoint(wildcards)


def evaluated_model(wildcards):
    """The model one evaluation job reads: θ0 for method "base", else the round's kept model."""
    if wildcards.method == "base":
        return THETA0
    return f"{ROUND}/model".format(**wildcards)


def round_checkpoint():
    """Distill's checkpoint output: temporary (removed once the next round and the round's keep job
    have read it, rosd/training/checkpoints.py) unless `checkpoints.keep: all`."""
    weights_and_state = directory(f"{ROUND}/checkpoint")
    return weights_and_state if config["checkpoints"]["keep"] == "all" else temp(weights_and_state)


def keep_settings(wildcards):
    """A kept model holds the whole checkpoint in a run's last round (to resume), else the weights
    in the model's dtype."""
    last = int(wildcards.round) == rounds_of(wildcards.target)
    return as_json({"resumable": last, "dtype": config["model"]["dtype"]})


def train_rows(target):
    """Rows of a target's train split, known before any job: the world's train_size, or a local file."""
    spec = config["data"]["datasets"].get(target)
    if spec is None:
        return config["data"]["train_size"]
    if not spec.get("path"):
        sys.exit(
            f"config error: rounds.{target} = {{epochs: ...}} needs data.datasets.{target}.path to count its rows; give its number of rounds instead"
        )
    try:
        return local_train_rows(spec["path"], spec.get("train_split", "train"))
    except (OSError, ValueError) as error:
        sys.exit(f"config error: rounds.{target}: cannot count the train split: {error}")


@functools.cache
def rounds_of(target):
    """The number of rounds of a run on ``target``: one for all, the target's own, or its epochs."""
    rounds, train = config["rounds"], config["train"]
    if isinstance(rounds, int):
        return rounds
    if target not in rounds:
        sys.exit(
            f"config error: rounds has no entry for target {target!r}: give every target its rounds, or one number"
        )
    if isinstance(rounds[target], int):
        return rounds[target]
    steps = planned_steps(train_rows(target), train["batch_prompts"], rounds[target]["epochs"])
    return rounds_for(steps, train["steps_per_round"])


def evaluated_rounds(method, target):
    """Rounds whose checkpoint is evaluated: every `evaluation.every_steps` steps and the last one
    (θ0, before training, is evaluated as "base")."""
    steps_per_round = method_settings(method)["train"]["steps_per_round"]
    return evaluation_rounds(rounds_of(target), steps_per_round, config["evaluation"]["every_steps"])


# Rounds per training job: 1, each round's five stages are jobs (workflow/rules/round.smk); more,
# one job runs a block of rounds (workflow/rules/round_blocks.smk, rosd/jobs/blocks.py).
ROUNDS_PER_JOB = config["execution"]["rounds_per_job"]


@functools.cache
def block_firsts(method, target):
    """{last round: first round} of each block of a run (rosd.jobs.planning.round_blocks)."""
    blocks = round_blocks(rounds_of(target), evaluated_rounds(method, target), ROUNDS_PER_JOB)
    return {last: first for first, last in blocks}


def data_settings(name):
    """The data keys one prepare_data job reads: its own data.datasets entry when it has one, so
    adding or changing another dataset never reruns this one (nor the training that reads it)."""
    data = config["data"]
    settings = {key: data[key] for key in ("source", "train_size", "test_size", "seed")}
    if name in data["datasets"]:
        settings["datasets"] = {name: data["datasets"][name]}
    return settings


def evaluation_settings():
    """What an evaluation job reads of `evaluation`: not the schedule, which only picks the jobs."""
    return {k: v for k, v in config["evaluation"].items() if k != "every_steps"}


def eval_summaries():
    out = expand(
        f"{EVAL}.json", method="base", target="all", seed=config["seeds"], round=0, benchmark=config["benchmarks"]
    )
    for method in TRAINED:
        for target in config["targets"]:
            out += expand(
                f"{EVAL}.json",
                method=method,
                target=target,
                seed=config["seeds"],
                round=evaluated_rounds(method, target),
                benchmark=config["benchmarks"],
            )
    return out


def round_metrics():
    """Every round's metrics file, or, where blocks of rounds are jobs, each block's last round's
    (the aggregate rule finds the others beside them)."""
    out = []
    for method in TRAINED:
        for target in config["targets"]:
            rounds = range(1, rounds_of(target) + 1) if ROUNDS_PER_JOB == 1 else sorted(block_firsts(method, target))
            out += expand(f"{ROUND}/metrics.json", method=method, target=target, seed=config["seeds"], round=rounds)
    return out


def final_outputs():
    # the tables and every plot; called from `rule all`, after report.smk has defined rule plots
    out = [f"{EXP}/tables/comparison.md", *rules.plots.output]
    if config["tracking"]["mlflow"]:
        out.append(f"{EXP}/mlflow.ingested.json")
    return out


def as_json(settings):
    return json.dumps(settings, sort_keys=True)


def model_settings(**extra):
    model = config["model"]
    keys = ("device", "dtype", "enable_thinking")
    return {**{k: model[k] for k in keys}, **extra}


def pick(settings, keys):
    return {k: settings[k] for k in keys if k in settings}


SAMPLING_KEYS = (
    "batch_prompts",
    "rollouts_per_prompt",
    "steps_per_round",
    "temperature",
    "top_p",
    "top_k",
    "max_new_tokens",
)
# What the reflect stage reads of train: the group filter and sibling choice, the teacher prompt's cap.
REFLECT_KEYS = ("group_filter", "skip_no_success", "sibling", "teacher_prompt_max_tokens")


def stage_settings(stage, wildcards):
    """The settings of one round stage of one run: only the keys the stage reads, so a change
    reruns the stages it affects (and what follows them), never the others."""
    method = dict(method_settings(wildcards.method))
    train = method.pop("train")
    common = model_settings(seed=int(wildcards.seed), round=int(wildcards.round))
    if stage == "rollouts":
        return {**common, "generation": config["generation"], "train": pick(train, SAMPLING_KEYS)}
    if stage == "reflect":
        reflect = {"train": pick(train, REFLECT_KEYS), "method": pick(method, ("objective", "teacher_context", "mask"))}
        if needs_reflection(method):
            reflect.update(reflection=config["reflection"], generation=config["generation"])
        return {**common, **reflect}
    if stage == "grade":
        return {"grading": config["grading"]}
    if stage == "teacher":
        teacher = {
            "method": pick(method, ("objective", "teacher", "loss")),
            "train": pick(train, ("temperature", "micro_batch", "token_chunk")),
        }
        return {**common, **teacher}
    return {**common, "method": method, "train": train, "method_name": wildcards.method, "target": wildcards.target}


# The blocks of rounds (workflow/rules/round_blocks.smk).
ROUND_STAGES = ("rollouts", "grade", "reflect", "teacher", "distill")


def block_first(wildcards):
    first = block_firsts(wildcards.method, wildcards.target).get(int(wildcards.round))
    if first is None:
        raise ValueError(f"round {wildcards.round} of {wildcards.method}/{wildcards.target} ends no block of rounds")
    return first


def block_start(wildcards):
    """Checkpoint first-1: the model the block starts from."""
    return checkpoint_dir(wildcards.method, wildcards.target, wildcards.seed, block_first(wildcards) - 1)


def block_teacher(wildcards):
    """θ0 for a frozen teacher; otherwise each round's previous checkpoint (the block's start first)."""
    if method_settings(wildcards.method)["teacher"] == "frozen":
        return THETA0
    return block_start(wildcards)


def block_plan(wildcards):
    first = block_first(wildcards)
    first_round = SimpleNamespace(method=wildcards.method, target=wildcards.target, seed=wildcards.seed, round=first)
    launcher = trainer()
    return as_json(
        {
            "first": first,
            "last": int(wildcards.round),
            "stages": {stage: stage_settings(stage, first_round) for stage in ROUND_STAGES},
            "trainer": None if launcher == "rosd" else shlex.split(launcher),
            "frozen_teacher": method_settings(wildcards.method)["teacher"] == "frozen",
            "keep_all": config["checkpoints"]["keep"] == "all",
        }
    )


def evaluation_job_settings(wildcards, **benchmark):
    """An evaluation job's settings: one benchmark's (benchmark=...) or every benchmark's (benchmarks=[...])."""
    return model_settings(
        seed=int(wildcards.seed),
        round=int(wildcards.round),
        method=wildcards.method,
        target=wildcards.target,
        **benchmark,
        evaluation=evaluation_settings(),
        generation=config["generation"],
        grading=config["grading"],
    )
