# Tables, plots and MLflow: the only rules that read across runs. One rule writes the MLflow store,
# so parallel jobs never contend for its SQLite file (docs/comparing_runs.md#mlflow). Files marked report(...) go into
# `snakemake --report report.html` (or report.zip); captions, which say how to read each file, are in
# workflow/report/. They are local rules: on a cluster they run beside Snakemake, not as allocations.


rule aggregate:
    input:
        eval_summaries(),
        round_metrics(),
    output:
        report(
            f"{EXP}/tables/comparison.md",
            caption="../report/comparison_md.rst",
            category="Comparison",
            labels={"table": "comparison (Markdown)"},
        ),
        report(
            f"{EXP}/tables/comparison.csv",
            caption="../report/comparison_csv.rst",
            category="Comparison",
            labels={"table": "comparison (CSV)"},
        ),
        report(
            f"{EXP}/tables/intervals.csv",
            caption="../report/intervals_csv.rst",
            category="Comparison",
            labels={"table": "mean@k with 95% intervals (CSV)"},
        ),
        report(
            f"{EXP}/tables/paired.csv",
            caption="../report/paired_csv.rst",
            category="Comparison",
            labels={"table": "paired differences (CSV)"},
        ),
        report(
            f"{EXP}/tables/localization.csv",
            caption="../report/localization_csv.rst",
            category="Comparison",
            labels={"table": "localization (CSV)"},
        ),
        report(
            f"{EXP}/tables/quote_offsets.csv",
            caption="../report/quote_offsets_csv.rst",
            category="Comparison",
            labels={"table": "quote start against the first error (CSV)"},
        ),
        report(
            f"{EXP}/tables/rounds.csv",
            caption="../report/rounds_csv.rst",
            category="Data",
            labels={"table": "round metrics (CSV)"},
        ),
        report(
            f"{EXP}/tables/evals.csv",
            caption="../report/evals_csv.rst",
            category="Data",
            labels={"table": "evaluations (CSV)"},
        ),
    log:
        f"{EXP}/logs/aggregate.log",
    localrule: True
    conda:
        "../envs/cpu.yaml"
    shell:
        f"rosd --log {{log}} aggregate --exp-dir {EXP} --out-dir {EXP}/tables"


rule plots:
    input:
        rounds=f"{EXP}/tables/rounds.csv",
        evals=f"{EXP}/tables/evals.csv",
        comparison=f"{EXP}/tables/comparison.csv",
        intervals=f"{EXP}/tables/intervals.csv",
        paired=f"{EXP}/tables/paired.csv",
        localization=f"{EXP}/tables/localization.csv",
        quote_offsets=f"{EXP}/tables/quote_offsets.csv",
    output:
        # the file names inside plots/ are fixed by rosd.reporting.plots.write_plots
        report(
            f"{EXP}/plots/heatmap.png",
            caption="../report/heatmap.rst",
            category="Plots",
            labels={"figure": "final mean@k heatmap"},
        ),
        report(
            f"{EXP}/plots/learning_curves.png",
            caption="../report/learning_curves.rst",
            category="Plots",
            labels={"figure": "learning curves"},
        ),
        report(
            f"{EXP}/plots/pass_at_k.png",
            caption="../report/pass_at_k.rst",
            category="Plots",
            labels={"figure": "pass@k"},
        ),
        report(
            f"{EXP}/plots/localization.png",
            caption="../report/localization.rst",
            category="Plots",
            labels={"figure": "localization per round"},
        ),
        report(
            f"{EXP}/plots/quote_offsets.png",
            caption="../report/quote_offsets.rst",
            category="Plots",
            labels={"figure": "quote start against the first error"},
        ),
        report(
            f"{EXP}/plots/paired.png",
            caption="../report/paired.rst",
            category="Plots",
            labels={"figure": "paired differences"},
        ),
        page=report(
            f"{EXP}/tables/comparison.html",
            caption="../report/comparison.rst",
            category="Comparison",
            labels={"table": "comparison and localization"},
        ),
    log:
        f"{EXP}/logs/plots.log",
    localrule: True
    conda:
        "../envs/cpu.yaml"
    shell:
        "rosd --log {log} plots --rounds {input.rounds} --evals {input.evals} --comparison {input.comparison}"
        " --intervals {input.intervals} --paired {input.paired}"
        f" --localization-table {{input.localization}} --quote-offsets-table {{input.quote_offsets}} --out-dir {EXP}/plots --out-page {{output.page}}"


rule track:
    input:
        f"{EXP}/tables/comparison.csv",
    output:
        f"{EXP}/mlflow.ingested.json",
    log:
        f"{EXP}/logs/track.log",
    localrule: True
    conda:
        "../envs/cpu.yaml"
    params:
        # A function, so Snakemake does not read the braces of config values (\boxed{}) as wildcards.
        config=lambda w: as_json(config),
    shell:
        f"rosd --log {{log}} track --exp-dir {EXP} --config {{params.config:q}} --out {{output}}"
