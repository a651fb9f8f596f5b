"""The pipeline's stages as thin shells: each reads its input files, calls ``rosd.method``,
``rosd.engines`` and ``rosd.training``, and writes its outputs atomically. Imports everything below
it (world, engines, training, models, method, evaluation, io), never ``rosd.jobs`` or ``rosd.reporting``.
"""
