"""The embedded world (docs/method.md, "Embedded world"): generated tasks with known steps, a tiny
tokenizer and Qwen2-architecture model, and the warm start that trains the shipped θ0, so the whole
method runs with no GPU and no network. May import ``rosd.engines``, ``rosd.training`` and below.

- ``rosd.world.tasks``: ``generate(family, split, n, seed)``, ``first_error_offset``, ``corrupt``, explanations;
- ``rosd.world.model``: the BPE tokenizer with a ChatML template and the model built from config;
- ``rosd.world.warm_start``: ``run_warm_start``, the rule that trains θ0 (and its command line);
- ``rosd.world.measure``: accuracy per family, reflection and teacher quality of a world model.
"""

from pathlib import Path

THETA0_DIR = str(Path(__file__).parent / "theta0")  # the shipped warm-started model and tokenizer
