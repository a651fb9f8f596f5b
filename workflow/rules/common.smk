# Paths, the experiment matrix and each stage's settings. A stage's settings hold only the config
# keys it reads, so changing (say) an evaluation setting reruns evaluation and nothing upstream.
import json

from rosd.methods import needs_reflection, resolve, trains

EXP = f"results/{config['experiment']}"
RUN = EXP + "/runs/{method}/{target}/seed{seed}"
ROUND = RUN + "/round{round}"
EVAL = EXP + "/eval/{method}/{target}/seed{seed}/round{round}/{benchmark}"
THETA0 = EXP + "/models/theta0"
TRAINED = [m for m in config["methods"] if trains(resolve(config, m))]


wildcard_constraints:
    seed=r"\d+",
    round=r"\d+",
    # θ0 is always evaluated (as "base"): it is round 0 of every learning curve.
    method="|".join(sorted(set(config["methods"]) | {"base"})),


def checkpoint_dir(method, target, seed, round):
    """Checkpoint r of a run; checkpoint 0 is θ0."""
    if int(round) == 0:
        return THETA0
    return ROUND.format(method=method, target=target, seed=seed, round=round) + "/checkpoint"


def evaluated_rounds():
    last = config["rounds"]
    return range(1, last + 1) if config["evaluation"]["rounds"] == "all" else [last]


def eval_summaries():
    out = expand(EVAL + ".json", method="base", target="all", seed=config["seeds"], round=0, benchmark=config["benchmarks"])
    for method in TRAINED:
        out += expand(
            EVAL + ".json", method=method, target=config["targets"], seed=config["seeds"],
            round=evaluated_rounds(), benchmark=config["benchmarks"],
        )
    return out


def round_metrics():
    return expand(ROUND + "/metrics.json", method=TRAINED, target=config["targets"], seed=config["seeds"], round=range(1, config["rounds"] + 1))


def final_outputs():
    # the tables and every plot; called from `rule all`, after report.smk has defined rule plots
    out = [EXP + "/tables/comparison.md", *rules.plots.output]
    if config["tracking"]["mlflow"]:
        out.append(EXP + "/mlflow.ingested.json")
    return out


def as_json(settings):
    return json.dumps(settings, sort_keys=True)


def model_settings(**extra):
    model = config["model"]
    keys = ("device", "dtype", "enable_thinking")
    return {**{k: model[k] for k in keys}, **extra}


def pick(settings, keys):
    return {k: settings[k] for k in keys if k in settings}


SAMPLING_KEYS = ("batch_prompts", "rollouts_per_prompt", "steps_per_round", "temperature", "top_p", "max_new_tokens")
FILTER_KEYS = ("group_filter", "skip_no_success", "sibling")


def stage_settings(stage, wildcards):
    """The JSON settings of one round stage of one run: only the keys the stage reads, so a change
    reruns the stages it affects (and what follows them), never the others."""
    method = resolve(config, wildcards.method)
    train = method.pop("train")
    common = model_settings(seed=int(wildcards.seed), round=int(wildcards.round))
    if stage == "rollouts":
        return as_json({**common, "generation": config["generation"], "train": pick(train, SAMPLING_KEYS)})
    if stage == "reflect":
        reflect = {"train": pick(train, FILTER_KEYS), "method": pick(method, ("objective", "teacher_context", "mask"))}
        if needs_reflection(method):
            reflect.update(reflection=config["reflection"], generation=config["generation"])
        return as_json({**common, **reflect})
    if stage == "teacher":
        teacher = {"method": pick(method, ("objective", "teacher", "loss")), "train": pick(train, ("temperature", "micro_batch", "token_chunk"))}
        return as_json({**common, **teacher})
    return as_json({**common, "method": method, "train": train, "method_name": wildcards.method, "target": wildcards.target})
