# Evaluation of one checkpoint, on one benchmark per job or on all in one job
# (`execution.evaluation_jobs`); θ0 is evaluated once per seed as method "base".


if config["execution"]["evaluation_jobs"] == "benchmark":

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
            settings=lambda w: as_json(evaluation_job_settings("evaluate", w, benchmark=w.benchmark)),
        shell:
            gpu_command(
                "rosd --log {log:q} evaluate --model {input.model:q} --data {input.data:q} --out-samples {output.samples:q}"
                " --out-summary {output.summary:q} --settings {params.settings:q}"
            )

else:

    rule evaluate_checkpoint:
        input:
            model=evaluated_model,
            data=expand(f"{EXP}/data/test/{{benchmark}}.jsonl", benchmark=config["benchmarks"]),
        output:
            samples=expand(f"{EVAL}.jsonl", benchmark=config["benchmarks"], allow_missing=True),
            summary=expand(f"{EVAL}.json", benchmark=config["benchmarks"], allow_missing=True),
        log:
            f"{EXP}/logs/evaluate/{{method}}_{{target}}_seed{{seed}}_round{{round}}.log",
        benchmark:
            f"{EXP}/benchmarks/evaluate/{{method}}_{{target}}_seed{{seed}}_round{{round}}.tsv"
        conda:
            conda_env("generation")
        threads: MODEL_THREADS
        resources:
            gpu=gpus("generation"),
        params:
            data_dir=lambda w, input: os.path.dirname(input.data[0]),
            out_dir=lambda w, output: os.path.dirname(output.summary[0]),
            settings=lambda w: as_json(
                evaluation_job_settings("evaluate-checkpoint", w, benchmarks=config["benchmarks"])
            ),
        shell:
            gpu_command(
                "rosd --log {log:q} evaluate-checkpoint --model {input.model:q} --data-dir {params.data_dir:q}"
                " --out-dir {params.out_dir:q} --settings {params.settings:q}"
            )
