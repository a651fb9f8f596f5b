# One training round r of a (method, target, seed) run: checkpoint r-1 -> checkpoint r (SPEC §2).


def previous_checkpoint(wildcards):
    return checkpoint_dir(wildcards.method, wildcards.target, wildcards.seed, int(wildcards.round) - 1)


rule rollouts:
    input:
        model=previous_checkpoint,
        data=EXP + "/data/train/{target}.jsonl",
    output:
        ROUND + "/rollouts.jsonl",
    params:
        settings=lambda w: stage_settings("rollouts", w),
    log:
        ROUND + "/logs/rollouts.log",
    benchmark:
        ROUND + "/benchmarks/rollouts.tsv"
    resources:
        gpu=gpus("generation"),
    conda:
        conda_env("generation")
    shell:
        GPU_POOL + "rosd rollouts --model {input.model} --data {input.data} --out {output} --settings {params.settings:q} 2> {log}"


rule grade:
    input:
        ROUND + "/rollouts.jsonl",
    output:
        ROUND + "/graded.jsonl",
    log:
        ROUND + "/logs/grade.log",
    conda:
        "../envs/cpu.yaml"
    shell:
        "rosd grade --rollouts {input} --out {output} 2> {log}"


rule reflect:
    input:
        model=previous_checkpoint,
        graded=ROUND + "/graded.jsonl",
    output:
        ROUND + "/reflections.jsonl",
    params:
        settings=lambda w: stage_settings("reflect", w),
    log:
        ROUND + "/logs/reflect.log",
    benchmark:
        ROUND + "/benchmarks/reflect.tsv"
    resources:
        gpu=gpus("generation"),
    conda:
        conda_env("generation")
    shell:
        GPU_POOL + "rosd reflect --model {input.model} --graded {input.graded} --out {output} --settings {params.settings:q} 2> {log}"


def teacher_input(wildcards):
    """θ0 for a frozen teacher; otherwise the previous checkpoint, which holds the EMA or live weights."""
    if resolve(config, wildcards.method)["teacher"] == "frozen":
        return THETA0
    return previous_checkpoint(wildcards)


rule teacher_score:
    input:
        teacher=teacher_input,
        student=previous_checkpoint,
        reflections=ROUND + "/reflections.jsonl",
    output:
        ROUND + "/teacher.pt",
    params:
        settings=lambda w: stage_settings("teacher", w),
    log:
        ROUND + "/logs/teacher_score.log",
    benchmark:
        ROUND + "/benchmarks/teacher_score.tsv"
    resources:
        gpu=gpus("scoring"),
    conda:
        conda_env("scoring")
    shell:
        GPU_POOL + "rosd teacher-score --teacher {input.teacher} --student {input.student} --reflections {input.reflections}"
        " --out {output} --settings {params.settings:q} 2> {log}"


rule distill:
    input:
        model=previous_checkpoint,
        reflections=ROUND + "/reflections.jsonl",
        teacher_scores=ROUND + "/teacher.pt",
    output:
        model=directory(ROUND + "/checkpoint"),
        metrics=ROUND + "/metrics.json",
    params:
        settings=lambda w: stage_settings("distill", w),
    log:
        ROUND + "/logs/distill.log",
    benchmark:
        ROUND + "/benchmarks/distill.tsv"
    resources:
        gpu=gpus("training"),
    conda:
        conda_env("training")
    shell:
        GPU_POOL + trainer() + " distill --model {input.model} --reflections {input.reflections} --teacher-scores {input.teacher_scores}"
        " --out-model {output.model} --out-metrics {output.metrics} --settings {params.settings:q} 2> {log}"
