# Evaluation of one checkpoint on one benchmark; θ0 is evaluated once per seed as method "base".


rule evaluate:
    input:
        model=evaluated_model,
        data=f"{EXP}/data/test/{{benchmark}}.jsonl",
    output:
        samples=f"{EVAL}.jsonl",
        summary=f"{EVAL}.json",
    log:
        f"{EXP}/logs/evaluate/{{method}}_{{target}}_seed{{seed}}_round{{round}}_{{benchmark}}.log",
    benchmark:
        f"{EXP}/benchmarks/evaluate/{{method}}_{{target}}_seed{{seed}}_round{{round}}_{{benchmark}}.tsv"
    conda:
        conda_env("generation")
    threads: MODEL_THREADS
    resources:
        gpu=gpus("generation"),
    params:
        settings=lambda w: as_json(
            model_settings(
                seed=int(w.seed),
                round=int(w.round),
                method=w.method,
                target=w.target,
                benchmark=w.benchmark,
                evaluation=evaluation_settings(),
                generation=config["generation"],
                grading=config["grading"],
            )
        ),
    shell:
        gpu_command(
            "rosd --log {log} evaluate --model {input.model} --data {input.data} --out-samples {output.samples}"
            " --out-summary {output.summary} --settings {params.settings:q}"
        )
