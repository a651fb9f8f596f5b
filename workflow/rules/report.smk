# Tables, plots and MLflow: the only rules that read across runs. One rule writes the MLflow store,
# so parallel jobs never contend for its SQLite file (SPEC §6). Files marked report(...) go into
# `snakemake --report report.html`; captions are in workflow/report/.


rule aggregate:
    input:
        eval_summaries(),
        round_metrics(),
    output:
        report(EXP + "/tables/comparison.md", caption="../report/comparison_files.rst", category="Comparison", labels={"table": "comparison (Markdown)"}),
        report(EXP + "/tables/comparison.csv", caption="../report/comparison_files.rst", category="Comparison", labels={"table": "comparison (CSV)"}),
        report(EXP + "/tables/localization.csv", caption="../report/comparison_files.rst", category="Comparison", labels={"table": "localization (CSV)"}),
        EXP + "/tables/rounds.csv",
        EXP + "/tables/evals.csv",
    log:
        EXP + "/logs/aggregate.log",
    conda:
        "../envs/cpu.yaml"
    shell:
        "rosd aggregate --exp-dir " + EXP + " --out-dir " + EXP + "/tables 2> {log}"


rule plots:
    input:
        rounds=EXP + "/tables/rounds.csv",
        evals=EXP + "/tables/evals.csv",
        comparison=EXP + "/tables/comparison.csv",
        localization=EXP + "/tables/localization.csv",
    output:
        # the file names inside plots/ are fixed by rosd.plots.write_plots
        report(EXP + "/plots/heatmap.png", caption="../report/heatmap.rst", category="Plots", labels={"figure": "final mean@k heatmap"}),
        report(EXP + "/plots/learning_curves.png", caption="../report/learning_curves.rst", category="Plots", labels={"figure": "learning curves"}),
        report(EXP + "/plots/pass_at_k.png", caption="../report/pass_at_k.rst", category="Plots", labels={"figure": "pass@k"}),
        report(EXP + "/plots/localization.png", caption="../report/localization.rst", category="Plots", labels={"figure": "localization per round"}),
        page=report(EXP + "/tables/comparison.html", caption="../report/comparison.rst", category="Comparison", labels={"table": "comparison and localization"}),
    log:
        EXP + "/logs/plots.log",
    conda:
        "../envs/cpu.yaml"
    shell:
        "rosd plots --rounds {input.rounds} --evals {input.evals} --comparison {input.comparison}"
        " --localization-table {input.localization} --out-dir " + EXP + "/plots --out-page {output.page} 2> {log}"


rule track:
    input:
        EXP + "/tables/comparison.csv",
    output:
        EXP + "/mlflow.ingested.json",
    params:
        # A function, so Snakemake does not read the braces of config values (\boxed{}) as wildcards.
        config=lambda w: as_json(config),
    log:
        EXP + "/logs/track.log",
    conda:
        "../envs/cpu.yaml"
    shell:
        "rosd track --exp-dir " + EXP + " --config {params.config:q} --out {output} 2> {log}"
