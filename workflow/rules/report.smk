# Tables and MLflow: the only rules that read across runs. One rule writes the MLflow store, so
# parallel jobs never contend for its SQLite file (SPEC §6).


rule aggregate:
    input:
        eval_summaries(),
        round_metrics(),
    output:
        EXP + "/tables/comparison.md",
        EXP + "/tables/comparison.csv",
    log:
        EXP + "/logs/aggregate.log",
    shell:
        "rosd aggregate --exp-dir " + EXP + " --out-dir " + EXP + "/tables 2> {log}"


rule track:
    input:
        EXP + "/tables/comparison.csv",
    output:
        EXP + "/mlflow.ingested.json",
    params:
        config=as_json(config),
    log:
        EXP + "/logs/track.log",
    shell:
        "rosd track --exp-dir " + EXP + " --config {params.config:q} --out {output} 2> {log}"
