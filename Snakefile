# rosd: Reflective On-Policy Self-Distillation as cached, file-based stages.
#   snakemake --cores all                     the default (embedded world) experiment
#   snakemake --cores all --configfile F      another preset (see config/)
import os
import sys

from snakemake.utils import min_version, update_config, validate

from rosd.jobs.config import ConfigError, check, check_methods, check_names, check_runnable, typed_command_line_config
from rosd.jobs.planning import rounds_of

min_version("8.0")
# Snakemake builds the DAG recursively; long chains of rounds need a deeper stack (docs/method.md, "Pitfalls").
sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


# --config's nested values arrive as strings (loss={alpha: 0.3}): typed as a config file types them.
update_config(config, typed_command_line_config(workflow.config_settings.config))
try:
    check(config)
except ConfigError as error:
    sys.exit(str(error))
validate(config, "workflow/schemas/config.schema.yaml")
try:
    check_methods(config)  # each method's preset + overrides, once the defaults are filled in
    check_names(config)  # targets, benchmarks and a local model directory, before any job
    check_runnable(config)  # settings the trainer cannot run, a reference solution a target lacks
    for _target in config["targets"]:
        rounds_of(config, _target)  # every target's rounds can be counted before any job
except ConfigError as error:
    sys.exit(str(error))


include: "workflow/rules/common.smk"
include: "workflow/rules/execution.smk"
include: "workflow/rules/data.smk"


# A round's stages as five jobs each, or blocks of rounds as one job (execution.rounds_per_job).
if config["execution"]["rounds_per_job"] == 1:

    include: "workflow/rules/round.smk"

else:

    include: "workflow/rules/round_blocks.smk"


include: "workflow/rules/keep_checkpoint.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
