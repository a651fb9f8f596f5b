"""Models a block of rounds keeps in memory (``execution.resident``, rosd/jobs/blocks.py): one
generation engine, the frozen teacher, and the trainer (weights, AdamW state, global step, an EMA
teacher) live across the block's stages and rounds. After a round's optimizer steps the new weights
are pushed into the engine in memory: no model load, engine start or checkpoint read between rounds.

The stages ask this module for their models by the checkpoint directory they were given. Outside a
block (`hold` not entered) every call loads from disk, as a stage job always did. Inside one, a
round's checkpoint is written whole only where Snakemake or an evaluation reads it (``written``);
any other round's checkpoint holds its config and tokenizer only, marked ``IN_MEMORY``: its weights
live in this process. A later process that finds the mark runs the block again from its input
(rosd/jobs/blocks.py).

On a GPU, a vLLM engine sleeps (frees its weights and KV cache) while the teacher scores and the
trainer runs, and the next push wakes it: written against vLLM's API, not yet run on a GPU.

A LoRA student is held as it trains (base, adapter and the adapter's AdamW state); the engine and
teacher scoring get its merged weights, as its checkpoint would hold them.

Under ``train.launcher: accelerate`` every training process runs the block (rosd/jobs/blocks.py):
each holds its FSDP2 shard of the student, of the AdamW state and of an EMA teacher across rounds
(rosd/training/sharding.py); process 0 alone holds the engine and the frozen teacher and runs the
other stages. After a round's steps the shards are gathered into process 0's whole copy of the
student (and of the EMA teacher), which the engine and teacher scoring read.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from rosd.engines import load_engine
from rosd.io.files import atomic_dir
from rosd.models.loading import load_model
from rosd.training.checkpoints import EMA_TEACHER, IN_MEMORY
from rosd.training.steps import optimizer_for
from rosd.training.student import SingleProcess, load_student, merged_copy, plain_weights

if TYPE_CHECKING:
    from rosd.training.sharding import Sharded

log = logging.getLogger(__name__)

@dataclass
class Trainer:
    """The student of checkpoint ``path``: its AdamW state, global step and ``runtime`` (one process,
    or this process's shard: rosd/training/student.py, sharding.py). ``student`` and ``ema``: the
    student and EMA teacher as whole models, in the main process (under sharding, copies gathered
    when a round ends; None elsewhere). ``origin``: the checkpoint on disk it was loaded from."""

    path: str
    student: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    global_step: int
    ema: torch.nn.Module | None
    runtime: SingleProcess | Sharded
    origin: str


class Held:
    """What one block holds; ``written``: the checkpoints it writes whole."""

    def __init__(self, written: set[str]):
        self.written = {_key(p) for p in written}
        self.engine, self.engine_path, self.engine_options = None, None, None
        self.frozen: dict[tuple, torch.nn.Module] = {}
        self.trainer: Trainer | None = None

    def holds(self, path: str | Path) -> bool:
        """Whether this process holds the weights of checkpoint ``path``."""
        return self.trainer is not None and self.trainer.path == _key(path)


_held: Held | None = None


@contextlib.contextmanager
def hold(written: set[str]):
    """Keep the models of the stages run inside in memory; write whole only the ``written``
    checkpoints."""
    global _held
    _held = Held(written)
    try:
        yield _held
    finally:
        _held = None


def holds(path: str | Path) -> bool:
    return _held is not None and _held.holds(path)


def engine(model: str, settings: dict):
    """The generation engine on checkpoint ``model``, with the stage's generation settings."""
    gen = settings["generation"]
    options = dict(device=settings["device"], dtype=settings["dtype"], batch_size=gen["batch_size"],
                   tensor_parallel_size=gen["tensor_parallel_size"])  # fmt: skip
    if _held is None:
        return load_engine(gen["backend"], model, **options)
    key, path = (gen["backend"], tuple(sorted(options.items()))), _key(model)
    if _held.engine is None or _held.engine_options != key or (_held.engine_path != path and not _held.holds(path)):
        _held.engine = None  # the old one goes before the new one loads
        # A checkpoint the block holds in memory has no weights on disk (a block whose first rounds
        # needed no engine): start from the checkpoint the trainer was loaded from, then push.
        source = _held.trainer.origin if _held.holds(path) else path
        _held.engine = load_engine(gen["backend"], source, resident=True, **options)
        _held.engine_path = source
    if _held.engine_path != path:  # the weights the held trainer made
        started = time.perf_counter()
        _held.engine.load_weights(plain_weights(_held.trainer.student))
        log.info("pushed the weights of %s into the engine in %.2f s", model, time.perf_counter() - started)
    _held.engine_options, _held.engine_path = key, path
    return _held.engine


def scoring_model(model: str, settings: dict, *, frozen: bool = False) -> torch.nn.Module:
    """Checkpoint ``model`` in eval mode for teacher scoring: kept when ``frozen`` (θ0 never
    changes); in a block, the HF engine's own model when it holds these weights."""
    kwargs = dict(device=settings["device"], dtype=settings["dtype"])
    if _held is None:
        return load_model(model, **kwargs).eval()
    _engine_sleeps()
    if frozen:
        key = (_key(model), tuple(sorted(kwargs.items())))
        if key not in _held.frozen:
            _held.frozen[key] = load_model(model, **kwargs).eval()
        return _held.frozen[key]
    if _held.engine_path == _key(model) and isinstance(getattr(_held.engine, "model", None), torch.nn.Module):
        return _held.engine.model
    if _held.holds(model):
        return _placed(merged_copy(_held.trainer.student).eval(), settings)
    return load_model(model, **kwargs).eval()


def ema_teacher(student: str, settings: dict) -> torch.nn.Module | None:
    """The EMA teacher saved with checkpoint ``student`` (or held with it), else None."""
    if _held is not None and _held.holds(student) and _held.trainer.ema is not None:
        ema = _held.trainer.ema
        return ema if ema.dtype == getattr(torch, settings["dtype"]) else _placed(copy.deepcopy(ema), settings)
    path = Path(student) / EMA_TEACHER
    return load_model(str(path), device=settings["device"], dtype=settings["dtype"]).eval() if path.exists() else None


def trainer(model: str, train: dict, method: dict, *, device: str, dtype: str) -> Trainer:
    """The student of checkpoint ``model``, its AdamW and global step, and an EMA teacher (the
    saved one, else the student's weights) when the method has one; sharded over the training
    processes under ``train.launcher: accelerate``."""
    if _held is not None:
        _engine_sleeps()
        if _held.holds(model):
            return _held.trainer
    if train.get("launcher", "none") == "accelerate":
        from rosd.training.sharding import Sharded

        runtime = Sharded(model, train, method, device=device, dtype=dtype)
        return Trainer(_key(model), runtime.host_copy, runtime.optimizer, runtime.resume(model), None, runtime, _key(model))
    student = load_student(model, train, device=device)
    optimizer, global_step = optimizer_for(student, train, Path(model))
    ema = None
    if method.get("teacher") == "ema":
        previous = Path(model) / EMA_TEACHER
        ema = load_model(str(previous) if previous.exists() else model, device=device).eval()
    runtime = SingleProcess(student, device=device, dtype=dtype, ema=ema)
    return Trainer(_key(model), student, optimizer, global_step, ema, runtime, _key(model))


def finish_round(trained: Trainer, out: str, tokenizer, global_step: int) -> None:
    """Write checkpoint ``out``: whole outside a block or where it is read, else its config and
    tokenizer (``IN_MEMORY``), the weights kept in memory (under sharding, gathered into the main
    process's whole copy)."""
    runtime = trained.runtime
    if _held is None or _key(out) in _held.written:
        ema = runtime.write_checkpoint(out, tokenizer, trained.optimizer, global_step, trains_on=_held is not None)
    else:
        ema = runtime.gather()
        if runtime.is_main:
            with atomic_dir(out) as tmp:
                trained.student.config.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                (tmp / IN_MEMORY).write_text("the weights of this checkpoint were held in memory by the block that made it\n")
    if _held is not None:
        if ema is not None:  # the sharded EMA teacher's gathered weights: the main process's whole copy
            if trained.ema is None:  # on the training device, where teacher scoring reads it
                trained.ema = copy.deepcopy(trained.student).to(runtime.device).eval()
            trained.ema.load_state_dict(ema)
        trained.path, trained.global_step = _key(out), global_step
        _held.trainer = trained


def _engine_sleeps() -> None:
    """Teacher scoring and training need the GPU memory the engine holds (vLLM on a GPU frees it;
    the next round's push wakes the engine)."""
    if _held.engine is not None:
        _held.engine.sleep()


def _placed(model: torch.nn.Module, settings: dict) -> torch.nn.Module:
    """``model`` on the stage's device, in its dtype (a sharded trainer's whole copies are on the host)."""
    return model.to(device=settings["device"], dtype=getattr(torch, settings["dtype"]))


def _key(path: str | Path) -> str:
    return str(Path(path))
