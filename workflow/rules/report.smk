# Tables, plots and MLflow: the only rules that read across runs. One rule writes the MLflow store,
# so parallel jobs never contend for its SQLite file (docs/comparing_runs.md#mlflow). Files marked report(...) go into
# `snakemake --report report.html` (or report.zip); captions, which say how to read each file, are in
# workflow/report/. They are local rules: on a cluster they run beside Snakemake, not as allocations.


rule aggregate:
    input:
        eval_summaries(),
        round_metrics(),
    output:
        # update(): a failed aggregate (one bad input) restores the previous tables instead of deleting them
        update(
            report(
                f"{EXP}/tables/comparison.md",
                caption="../report/comparison_md.rst",
                category="Comparison",
                labels={"table": "comparison (Markdown)"},
            )
        ),
        update(
            report(
                f"{EXP}/tables/comparison.csv",
                caption="../report/comparison_csv.rst",
                category="Comparison",
                labels={"table": "comparison (CSV)"},
            )
        ),
        update(
            report(
                f"{EXP}/tables/intervals.csv",
                caption="../report/intervals_csv.rst",
                category="Comparison",
                labels={"table": "mean@k with 95% intervals (CSV)"},
            )
        ),
        update(
            report(
                f"{EXP}/tables/paired.csv",
                caption="../report/paired_csv.rst",
                category="Comparison",
                labels={"table": "paired differences (CSV)"},
            )
        ),
        update(
            report(
                f"{EXP}/tables/localization.csv",
                caption="../report/localization_csv.rst",
                category="Comparison",
                labels={"table": "localization (CSV)"},
            )
        ),
        update(
            report(
                f"{EXP}/tables/quote_offsets.csv",
                caption="../report/quote_offsets_csv.rst",
                category="Comparison",
                labels={"table": "quote start against the first error (CSV)"},
            )
        ),
        update(
            report(
                f"{EXP}/tables/rounds.csv",
                caption="../report/rounds_csv.rst",
                category="Data",
                labels={"table": "round metrics (CSV)"},
            )
        ),
        update(
            report(
                f"{EXP}/tables/evals.csv",
                caption="../report/evals_csv.rst",
                category="Data",
                labels={"table": "evaluations (CSV)"},
            )
        ),
    log:
        f"{EXP}/logs/aggregate.log",
    localrule: True
    conda:
        "../envs/cpu.yaml"
    params:
        # results/<experiment>/ and its tables/, from the outputs (Snakemake's linter wants no fixed paths here)
        exp_dir=lambda w, output: os.path.dirname(os.path.dirname(output[0])),
        out_dir=lambda w, output: os.path.dirname(output[0]),
    shell:
        "rosd --log {log:q} aggregate --exp-dir {params.exp_dir:q} --out-dir {params.out_dir:q}"


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
        report(
            f"{EXP}/plots/mechanism.png",
            caption="../report/mechanism.rst",
            category="Plots",
            labels={"figure": "mechanism per round"},
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
    params:
        out_dir=lambda w, output: os.path.dirname(output[0]),
    shell:
        "rosd --log {log:q} plots --rounds {input.rounds:q} --evals {input.evals:q} --comparison {input.comparison:q}"
        " --intervals {input.intervals:q} --paired {input.paired:q} --localization-table {input.localization:q}"
        " --quote-offsets-table {input.quote_offsets:q} --out-dir {params.out_dir:q} --out-page {output.page:q}"


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
        exp_dir=lambda w, output: os.path.dirname(output[0]),
        # A function, so Snakemake does not read the braces of config values (\boxed{}) as wildcards.
        config=lambda w: as_json(config),
    shell:
        "rosd --log {log:q} track --exp-dir {params.exp_dir:q} --config {params.config:q} --out {output:q}"
