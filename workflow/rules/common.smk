# Paths, the experiment matrix and each stage's settings. A stage's settings hold only the config
# keys it reads, so changing (say) an evaluation setting reruns evaluation and nothing upstream.
import json

from rosd.methods import resolve

EXP = f"results/{config['experiment']}"
RUN = EXP + "/runs/{method}/{target}/seed{seed}"
ROUND = RUN + "/round{round}"
EVAL = EXP + "/eval/{method}/{target}/seed{seed}/round{round}/{benchmark}"
THETA0 = EXP + "/models/theta0"
TRAINED = [m for m in config["methods"] if resolve(config, m)["train"]]


wildcard_constraints:
    seed=r"\d+",
    round=r"\d+",
    method="|".join(config["methods"]),


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
    out = [EXP + "/tables/comparison.md"]
    if config["tracking"]["mlflow"]:
        out.append(EXP + "/mlflow.ingested.json")
    return out


def as_json(settings):
    return json.dumps(settings, sort_keys=True)


def model_settings(**extra):
    model = config["model"]
    keys = ("device", "dtype", "enable_thinking")
    return {**{k: model[k] for k in keys}, "generation": config["generation"], **extra}


SAMPLING_KEYS = ("batch_prompts", "rollouts_per_prompt", "steps_per_round", "temperature", "top_p", "max_new_tokens")


def stage_settings(stage, wildcards):
    """The JSON settings of one round stage for one (method, target, seed, round)."""
    seed, round = int(wildcards.seed), int(wildcards.round)
    train = config["train"]
    if stage == "rollouts":
        return as_json(model_settings(seed=seed, round=round, train={k: train[k] for k in SAMPLING_KEYS}))
    method = resolve(config, wildcards.method)
    common = model_settings(seed=seed, round=round, method=method, train=train)
    if stage == "reflect":
        return as_json({**common, "reflection": config["reflection"]})
    if stage == "teacher":
        return as_json(common)
    return as_json({**common, "method_name": wildcards.method, "target": wildcards.target})
