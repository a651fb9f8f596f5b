# Data preparation and θ0.


def data_settings(name):
    """The data keys one prepare_data job reads: its own data.datasets entry when it has one, so
    adding or changing another dataset never reruns this one (nor the training that reads it)."""
    data = config["data"]
    settings = {key: data[key] for key in ("source", "train_size", "test_size", "seed")}
    if name in data["datasets"]:
        settings["datasets"] = {name: data["datasets"][name]}
    return settings


rule prepare_data:
    output:
        EXP + "/data/{split}/{name}.jsonl",
    wildcard_constraints:
        split="train|test",
    params:
        settings=lambda w: as_json(data_settings(w.name)),
    log:
        EXP + "/logs/prepare_data/{split}_{name}.log",
    conda:
        "../envs/cpu.yaml"
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
    conda:
        "../envs/cpu.yaml"
    shell:
        "rosd init-model --out {output} --settings {params.settings:q} 2> {log}"
