# Data preparation and θ0.


rule prepare_data:
    output:
        EXP + "/data/{split}/{name}.jsonl",
    wildcard_constraints:
        split="train|test",
    params:
        settings=as_json(config["data"]),
    log:
        EXP + "/logs/prepare_data/{split}_{name}.log",
    shell:
        "rosd prepare-data --name {wildcards.name} --split {wildcards.split} --out {output} --settings {params.settings:q} 2> {log}"


rule init_model:
    output:
        directory(THETA0),
    params:
        settings=as_json(config["model"]),
    log:
        EXP + "/logs/init_model.log",
    benchmark:
        EXP + "/benchmarks/init_model.tsv"
    shell:
        "rosd init-model --out {output} --settings {params.settings:q} 2> {log}"
