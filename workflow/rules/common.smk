# Paths, the experiment matrix and each stage's settings. A stage's settings hold only the config
# keys it reads, so changing (say) an evaluation setting reruns evaluation and nothing upstream.
import functools
import json
import shlex
from types import SimpleNamespace

from rosd.method.presets import evaluation_rounds, resolve, trains
from rosd.jobs import planning
from rosd.jobs.planning import round_blocks
from rosd.jobs.registry import ROUND_STAGES, data_settings, init_model_settings, stage_settings

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
    return as_json(stage_settings("keep-checkpoint", config, resumable=last))


@functools.cache
def rounds_of(target):
    """The number of rounds of a run on ``target`` (rosd.jobs.planning.rounds_of, checked in the Snakefile)."""
    return planning.rounds_of(config, target)


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


def round_job_settings(stage, wildcards):
    """The settings of one round stage's job (rosd/jobs/registry.py: only the keys the stage reads)."""
    job = {"seed": int(wildcards.seed), "round": int(wildcards.round)}
    if stage == "distill":
        job.update(method_name=wildcards.method, target=wildcards.target)
    if stage == "grade":
        job = {}
    return stage_settings(stage, config, method_settings(wildcards.method), **job)


# The blocks of rounds (workflow/rules/round_blocks.smk).


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
            "stages": {name: round_job_settings(stage, first_round) for name, stage in ROUND_STAGES.items()},
            "trainer": None if launcher == "rosd" else shlex.split(launcher),
            "frozen_teacher": method_settings(wildcards.method)["teacher"] == "frozen",
            "keep_all": config["checkpoints"]["keep"] == "all",
        }
    )


def evaluation_job_settings(stage, wildcards, **benchmark):
    """An evaluation job's settings: one benchmark's (``evaluate``, benchmark=...) or every
    benchmark's (``evaluate-checkpoint``, benchmarks=[...])."""
    return stage_settings(
        stage, config, seed=int(wildcards.seed), round=int(wildcards.round), method=wildcards.method,
        target=wildcards.target, **benchmark,
    )  # fmt: skip
