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

from rosd.io.files import CorruptOutputError, InputFormatError

# Saved by a plain ``tokenizers`` backend (the world's own, rosd/world/model.py): loaded as saved.
# AutoTokenizer builds Qwen2's tokenizer for a qwen2 config instead, which splits text with Qwen2's
# pattern ("\n\n" one token, not two), not the one the tokenizer and θ0 were trained with.
PLAIN_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
# The JSON files of a model directory that transformers reads as it loads a model or tokenizer.
JSON_FILES = ("config.json", "tokenizer_config.json", "tokenizer.json", "generation_config.json")


def _damaged(path: Path, problem: str) -> CorruptOutputError:
    """A broken file of a model directory, as one line: what is wrong and the directory to rewrite."""
    return CorruptOutputError(path, None, problem, rerun=path.parent)


def _json_file(path: Path):
    """The value of one of a model directory's JSON files, None when it is absent; a truncated or
    otherwise unreadable one is refused as one line naming it."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _damaged(path, "not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise _damaged(path, f"not valid JSON, truncated or corrupted ({error.msg} at line {error.lineno})") from None


def _config(model_dir: str) -> dict:
    """The text model's settings in a directory's config.json ({} for a hub name or no config)."""
    config = _json_file(Path(model_dir) / "config.json")
    if config is not None and not isinstance(config, dict):
        raise _damaged(Path(model_dir) / "config.json", f"a JSON {type(config).__name__}, not an object")
    config = config or {}
    return config.get("text_config") or config


def max_positions(model_dir: str) -> int | None:
    """The longest sequence (prompt + new tokens) the model's positions cover, from its config.json's
    ``max_position_embeddings``; None when it says none."""
    return _config(model_dir).get("max_position_embeddings")


def _refuse_damaged_files(model_dir: str) -> None:
    """Raise one line naming a damaged file of ``model_dir``, if one is why transformers could not
    load from it: a JSON file that does not parse, or a safetensors file whose header or length is
    wrong (a truncated copy, an interrupted write). Returns when every file reads."""
    from safetensors import SafetensorError, safe_open

    directory = Path(model_dir)
    for name in JSON_FILES:
        _json_file(directory / name)
    for weights in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(weights), "pt"):
                pass
        except SafetensorError as error:
            raise _damaged(weights, f"truncated or corrupted ({error})") from None


def load_tokenizer(model_dir: str):
    """The tokenizer of a model directory or hub name, as it was saved; pad falls back to eos. A
    tokenizer with more tokens than the model's input embedding has rows is refused: those ids
    would index past the embedding."""
    plain = (_json_file(Path(model_dir) / "tokenizer_config.json") or {}).get("tokenizer_class") in PLAIN_TOKENIZER_CLASSES
    try:
        tokenizer = (PreTrainedTokenizerFast if plain else AutoTokenizer).from_pretrained(model_dir)
    except Exception:
        _refuse_damaged_files(model_dir)
        raise
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    vocab_size = _config(model_dir).get("vocab_size")
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise InputFormatError(Path(model_dir) / "config.json", None, f"vocab_size {vocab_size} (the input embedding's rows) is "
                               f"smaller than its tokenizer's {len(tokenizer)} tokens: ids from {vocab_size} on have no "
                               "embedding; give a tokenizer and a model that belong together")
    return tokenizer


def load_model(model_dir: str, *, device: str = "cpu", dtype: str = "float32"):
    """The model in ``model_dir``; on the ``meta`` device its structure only (no weights read). A
    truncated or corrupted file there is refused as one line naming it, not a library traceback."""
    _config(model_dir)
    if device == "meta":
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), dtype=getattr(torch, dtype))
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    except Exception:
        _refuse_damaged_files(model_dir)
        raise
    return model.to(device)
