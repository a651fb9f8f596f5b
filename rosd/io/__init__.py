"""The floor everything stands on: atomic files and JSONL, the lifeline that ends a job with its
Snakemake, offline-hub messages. Imports nothing else from rosd.
"""
