"""Judging answers and summarizing scores: verifiers, math-verify workers, metrics, intervals, and the
benchmark adapters that read data files. May import only ``rosd.io``.
"""
