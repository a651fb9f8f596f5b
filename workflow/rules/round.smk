# One training round r of a (method, target, seed) run: checkpoint r-1 -> checkpoint r (docs/method.md#rounds).


rule rollouts:
    input:
        model=previous_checkpoint,
        data=f"{EXP}/data/train/{{target}}.jsonl",
    output:
        f"{ROUND}/rollouts.jsonl",
    log:
        f"{ROUND}/logs/rollouts.log",
    benchmark:
        f"{ROUND}/benchmarks/rollouts.tsv"
    conda:
        conda_env("generation")
    threads: MODEL_THREADS
    resources:
        gpu=gpus("generation"),
    params:
        settings=lambda w: as_json(round_job_settings("rollouts", w)),
    shell:
        gpu_command(
            "rosd --log {log:q} rollouts --model {input.model:q} --data {input.data:q} --out {output:q} --settings {params.settings:q}"
        )


rule grade:
    input:
        f"{ROUND}/rollouts.jsonl",
    output:
        f"{ROUND}/graded.jsonl",
    log:
        f"{ROUND}/logs/grade.log",
    conda:
        "../envs/cpu.yaml"
    params:
        settings=lambda w: as_json(round_job_settings("grade", w)),
    shell:
        "rosd --log {log:q} grade --rollouts {input:q} --out {output:q} --settings {params.settings:q}"


rule reflect:
    input:
        model=previous_checkpoint,
        graded=f"{ROUND}/graded.jsonl",
    output:
        f"{ROUND}/reflections.jsonl",
    log:
        f"{ROUND}/logs/reflect.log",
    benchmark:
        f"{ROUND}/benchmarks/reflect.tsv"
    conda:
        conda_env("generation")
    threads: MODEL_THREADS
    resources:
        gpu=gpus("generation"),
    params:
        settings=lambda w: as_json(round_job_settings("reflect", w)),
    shell:
        gpu_command(
            "rosd --log {log:q} reflect --model {input.model:q} --graded {input.graded:q} --out {output:q} --settings {params.settings:q}"
        )


rule teacher_score:
    input:
        teacher=teacher_input,
        student=previous_checkpoint,
        reflections=f"{ROUND}/reflections.jsonl",
    output:
        f"{ROUND}/teacher.pt",
    log:
        f"{ROUND}/logs/teacher_score.log",
    benchmark:
        f"{ROUND}/benchmarks/teacher_score.tsv"
    conda:
        conda_env("scoring")
    threads: MODEL_THREADS
    resources:
        gpu=gpus("scoring"),
    params:
        settings=lambda w: as_json(round_job_settings("teacher-score", w)),
    shell:
        gpu_command(
            "rosd --log {log:q} teacher-score --teacher {input.teacher:q} --student {input.student:q} --reflections {input.reflections:q}"
            " --out {output:q} --settings {params.settings:q}"
        )


rule distill:
    input:
        model=previous_checkpoint,
        reflections=f"{ROUND}/reflections.jsonl",
        teacher_scores=f"{ROUND}/teacher.pt",
    output:
        model=round_checkpoint(),
        metrics=f"{ROUND}/metrics.json",
    log:
        f"{ROUND}/logs/distill.log",
    benchmark:
        f"{ROUND}/benchmarks/distill.tsv"
    conda:
        conda_env("training")
    threads: MODEL_THREADS
    resources:
        gpu=gpus("training"),
    params:
        settings=lambda w: as_json(round_job_settings("distill", w)),
    shell:
        gpu_command(
            trainer(),
            " --log {log:q} distill --model {input.model:q} --reflections {input.reflections:q} --teacher-scores {input.teacher_scores:q}"
            " --out-model {output.model:q} --out-metrics {output.metrics:q} --settings {params.settings:q}",
        )
