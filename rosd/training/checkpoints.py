"""What outlives a round's checkpoint: checkpoints nothing evaluates are temporary (docs/method.md,
"Checkpoints").

A round's checkpoint (weights, trainer state, an EMA teacher, a LoRA adapter) is Snakemake
``temp()``: it is removed once the next round's jobs and its own keep job are done. The keep job
(`rosd keep-checkpoint`) of an evaluated round leaves ``round<r>/model``: the weights alone, in
the model's dtype (``model.dtype``; training keeps float32 weights), or, for a run's last round, the
whole checkpoint, so a finished run can still be resumed. Files it does not change are hard links
(no byte copied; a copy only where links are refused, e.g. across filesystems): they cost no disk
beyond the checkpoint they came from, and outlive it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from rosd.io.files import atomic_dir

log = logging.getLogger(__name__)

# A checkpoint's entries beside the plain model: what only training reads.
TRAINER_STATE = "trainer_state.pt"  # AdamW state and the global step (rosd/training/student.py)
SHARDED_TRAINER_STATE = "trainer_state"  # the same, one file per process (rosd/training/sharding.py)
EMA_TEACHER = "ema_teacher"  # an EMA teacher's weights (rosd/stages/teacher.py)
ADAPTER = "adapter"  # a LoRA adapter (rosd/training/student.py)
# In a checkpoint directory a resident block made (rosd/stages/resident.py): config and tokenizer
# only, the weights held in that block's memory and never written.
IN_MEMORY = "weights_in_memory"
TRAINING_ONLY = (TRAINER_STATE, SHARDED_TRAINER_STATE, EMA_TEACHER, ADAPTER)
# Snakemake's mtime carrier inside a directory output: the kept model gets its own, never a link,
# or touching one would touch the checkpoint's too (and make it look newer than what read it).
SNAKEMAKE_TIMESTAMP = ".snakemake_timestamp"


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _cast_weights(source: Path, target: Path, dtype: str) -> None:
    """A safetensors file with its floating-point tensors in ``dtype``. (A sharded model's index
    keeps its float32 total_size: loaders read only its weight map.)"""
    import torch
    from safetensors.torch import load_file, save_file

    to = getattr(torch, dtype)
    tensors = load_file(source)
    save_file({k: v.to(to) if v.is_floating_point() else v for k, v in tensors.items()}, target, metadata={"format": "pt"})


def _config_in(source: Path, target: Path, dtype: str) -> None:
    config = json.loads(source.read_text())
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = dtype
    target.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def keep_checkpoint(*, checkpoint: str, out: str, settings: dict) -> None:
    """Place the kept part of ``checkpoint`` at ``out``: everything, as it is, when
    ``settings["resumable"]`` (the run's newest checkpoint); else the weights in
    ``settings["dtype"]``, with the config and tokenizer files."""
    source, resumable, dtype = Path(checkpoint), settings["resumable"], settings["dtype"]
    cast = not resumable and dtype != "float32"
    with atomic_dir(out) as tmp:
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if relative.name == SNAKEMAKE_TIMESTAMP or (not resumable and relative.parts[0] in TRAINING_ONLY):
                continue
            if path.is_dir():
                (tmp / relative).mkdir(parents=True, exist_ok=True)
                continue
            (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
            if cast and path.suffix == ".safetensors":
                _cast_weights(path, tmp / relative, dtype)
            elif cast and relative == Path("config.json"):
                _config_in(path, tmp / relative, dtype)
            else:
                _link_or_copy(path, tmp / relative)
    log.info("kept %s of %s at %s", "all" if resumable else f"the {dtype} weights", checkpoint, out)
