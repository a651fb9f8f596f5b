# What an evaluated round keeps of its temporary checkpoint, by hard links (rosd/training/checkpoints.py).
rule keep_checkpoint:
    input:
        f"{ROUND}/checkpoint",
    output:
        directory(f"{ROUND}/model"),
    log:
        f"{ROUND}/logs/keep_checkpoint.log",
    localrule: True
    conda:
        "../envs/cpu.yaml"
    params:
        settings=keep_settings,
    shell:
        "rosd --log {log:q} keep-checkpoint --checkpoint {input:q} --out {output:q} --settings {params.settings:q}"
