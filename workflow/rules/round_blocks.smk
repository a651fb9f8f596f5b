# Rounds first..r of a (method, target, seed) run as one job (`execution.rounds_per_job` > 1): the
# stages of round.smk, run in a row by rosd/jobs/blocks.py; checkpoint first-1 -> checkpoint r.
rule round_block:
    input:
        model=block_start,
        teacher=block_teacher,
        data=f"{EXP}/data/train/{{target}}.jsonl",
    output:
        model=round_checkpoint(),
        metrics=f"{ROUND}/metrics.json",
    log:
        f"{ROUND}/logs/round_block.log",
    benchmark:
        f"{ROUND}/benchmarks/round_block.tsv"
    conda:
        conda_env("training")
    threads: MODEL_THREADS
    resources:
        gpu=max(gpus("generation"), gpus("scoring"), gpus("training")),
    params:
        plan=block_plan,
    shell:
        gpu_command(
            block_runner(),
            " --log {log:q} run-rounds --model {input.model:q} --teacher {input.teacher:q} --data {input.data:q}",
            " --out-model {output.model:q} --out-metrics {output.metrics:q} --settings {params.plan:q}",
        )
