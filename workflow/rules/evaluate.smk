# Evaluation of one checkpoint on one benchmark; θ0 is evaluated once per seed as method "base".


def evaluated_model(wildcards):
    if wildcards.method == "base":
        return THETA0
    return checkpoint_dir(wildcards.method, wildcards.target, wildcards.seed, wildcards.round)


rule evaluate:
    input:
        model=evaluated_model,
        data=EXP + "/data/test/{benchmark}.jsonl",
    output:
        samples=EVAL + ".jsonl",
        summary=EVAL + ".json",
    params:
        settings=lambda w: as_json(
            model_settings(
                seed=int(w.seed), round=int(w.round), method=w.method, target=w.target,
                benchmark=w.benchmark, evaluation=config["evaluation"], generation=config["generation"],
            )
        ),
    log:
        EXP + "/logs/evaluate/{method}_{target}_seed{seed}_round{round}_{benchmark}.log",
    benchmark:
        EXP + "/benchmarks/evaluate/{method}_{target}_seed{seed}_round{round}_{benchmark}.tsv"
    resources:
        gpu=gpus("generation"),
    conda:
        conda_env("generation")
    shell:
        GPU_POOL + "rosd evaluate --model {input.model} --data {input.data} --out-samples {output.samples}"
        " --out-summary {output.summary} --settings {params.settings:q} 2> {log}"
