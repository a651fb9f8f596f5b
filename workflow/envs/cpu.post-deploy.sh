#!/usr/bin/env bash
# Run by `snakemake --use-conda` inside the new environment: install rosd from the checkout the
# workflow runs from (ROSD_SOURCE, set by workflow/rules/execution.smk); dependencies are the env's.
set -euo pipefail
pip install --no-deps -e "${ROSD_SOURCE:?run through the rosd Snakefile, which sets ROSD_SOURCE}"
