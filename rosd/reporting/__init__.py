"""Tables, plots and the MLflow store, made from the stages' files after the fact. May import
``rosd.evaluation`` and ``rosd.io``; no stage imports it.
"""
