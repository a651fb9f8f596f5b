"""rosd: Reflective On-Policy Self-Distillation as a cached, file-based Snakemake pipeline."""

__version__ = "0.1.0"
