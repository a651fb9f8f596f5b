# Data preparation and θ0.


rule prepare_data:
    output:
        f"{EXP}/data/{{split}}/{{name}}.jsonl",
    log:
        f"{EXP}/logs/prepare_data/{{split}}_{{name}}.log",
    wildcard_constraints:
        split="train|test",
    conda:
        "../envs/cpu.yaml"
    params:
        settings=lambda w: as_json(data_settings(config, w.name)),
    shell:
        "rosd --log {log:q} prepare-data --name {wildcards.name:q} --split {wildcards.split:q} --out {output:q} --settings {params.settings:q}"


rule init_model:
    output:
        directory(THETA0),
    log:
        f"{EXP}/logs/init_model.log",
    benchmark:
        f"{EXP}/benchmarks/init_model.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: MODEL_THREADS
    params:
        settings=as_json(init_model_settings(config)),
    shell:
        "rosd --log {log:q} init-model --out {output:q} --settings {params.settings:q}"
