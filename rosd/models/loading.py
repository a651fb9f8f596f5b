"""Loading models and tokenizers through the standard transformers API (the same path serves Qwen3)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
)

# Saved by a plain ``tokenizers`` backend (the world's own, rosd/world/model.py): loaded as saved.
# AutoTokenizer builds Qwen2's tokenizer for a qwen2 config instead, which splits text with Qwen2's
# pattern ("\n\n" one token, not two), not the one the tokenizer and θ0 were trained with.
PLAIN_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(model_dir: str):
    """The tokenizer of a model directory or hub name, as it was saved; pad falls back to eos."""
    config = Path(model_dir) / "tokenizer_config.json"
    plain = config.is_file() and json.loads(config.read_text()).get("tokenizer_class") in PLAIN_TOKENIZER_CLASSES
    tokenizer = (PreTrainedTokenizerFast if plain else AutoTokenizer).from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_dir: str, *, device: str = "cpu", dtype: str = "float32"):
    """The model in ``model_dir``; on the ``meta`` device its structure only (no weights read)."""
    if device == "meta":
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), dtype=getattr(torch, dtype))
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device)
