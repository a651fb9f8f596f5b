"""Training over several processes (``train.launcher: accelerate``): FSDP2, applied by rosd itself.

``accelerate launch`` (or torchrun) starts one process per GPU. Each builds the student on the meta
device, shards it with torch's ``fully_shard`` (one unit per decoder layer, the rest at the root)
and runs the same training code as one process. The same path runs on CUDA (NCCL) and on the CPU
(gloo), which is how the tests run it.

- Host memory: only process 0 reads the checkpoint (one float32 copy per node, not one per
  process); every process's shard is filled by a broadcast from it.
- The weights (and an EMA teacher's) are gathered to process 0 and written as a plain Hugging Face
  directory, as one process writes them; a LoRA student writes its adapter and the merged weights.
- The AdamW state is written sharded by ``torch.distributed.checkpoint`` into ``trainer_state/``,
  each process its own file (no gather), and read back the same way.
- An EMA teacher is a shard beside each weight shard, updated where it lies.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from rosd.io.files import atomic_dir
from rosd.models.loading import load_model
from rosd.training.checkpoints import EMA_TEACHER, SHARDED_TRAINER_STATE, TRAINER_STATE
from rosd.training.student import load_student, save_student

GATHER_TO_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)
BROADCAST_FROM_RANK0 = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
ROOT = "student."  # the wrapper's name for the student in state dict keys


class CallInside(torch.nn.Module):
    """Runs ``fn(student, ...)`` as its forward. The loss reads the decoder's hidden states and
    projects them onto the vocabulary chunk by chunk; wrapped in this module, every use of the
    weights happens inside the forward whose hooks gather the root's shards."""

    def __init__(self, student):
        super().__init__()
        self.student = student

    def forward(self, fn, *args, **kwargs):
        return fn(self.student, *args, **kwargs)


def decoder_layers(model) -> list[torch.nn.Module]:
    """The modules of the classes any submodule names in ``_no_split_modules`` (the decoder layers;
    a LoRA student wraps the model that names them)."""
    names = {name for m in model.modules() for name in (getattr(m, "_no_split_modules", None) or [])}
    return [m for m in model.modules() if type(m).__name__ in names]


def _rooted(weights: dict) -> dict:
    return {ROOT + k: v for k, v in weights.items()}


def join_processes(device: str) -> None:
    """Join the process group of the processes ``accelerate launch`` (or torchrun) started: NCCL on
    CUDA, gloo on the CPU; a clear error when this process was started alone."""
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:
        raise SystemExit("train.launcher=accelerate: training must be started by `accelerate launch` or torchrun "
                         "(the workflow's commands are), not alone")
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")


class Sharded:
    """One of ``world_size`` processes training one FSDP2-sharded student (``SingleProcess``'s
    interface, rosd/training/student.py)."""

    def __init__(self, model_dir: str, train: dict, method: dict, *, device: str, dtype: str):
        cuda = device.startswith("cuda")
        join_processes(device)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.is_main = self.rank == 0
        self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        # Process 0's plain copy: the source of every shard, and what its checkpoint is written from.
        self.host_copy = load_student(model_dir, train, device="cpu") if self.is_main else None
        self.student = load_student(model_dir, train, device="meta")
        self.wrapped = self._shard(CallInside(self.student), bfloat16=cuda and dtype == "bfloat16")
        self.ema = None
        if method.get("teacher") == "ema":
            previous = Path(model_dir) / EMA_TEACHER
            self._broadcast(load_model(str(previous if previous.exists() else model_dir)) if self.is_main else None)
            self.ema = [p.detach().clone() for p in self.wrapped.parameters()]
        self._broadcast(self.host_copy)
        self._broadcast_buffers()
        self.optimizer = torch.optim.AdamW(self.wrapped.parameters(), lr=train["lr"], weight_decay=train["weight_decay"])

    def _shard(self, root: CallInside, *, bfloat16: bool) -> CallInside:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # bfloat16 compute over float32 master weights, gradients reduced in float32.
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bfloat16 else MixedPrecisionPolicy()
        for layer in decoder_layers(root.student):
            fully_shard(layer, mp_policy=policy)
        fully_shard(root, mp_policy=policy)
        root.to_empty(device=self.device)  # storage for the shards; the broadcast fills it
        return root

    def _broadcast(self, model) -> None:
        """Process 0's ``model`` weights into every process's shards (``model`` None elsewhere)."""
        set_model_state_dict(self.wrapped, _rooted(model.state_dict()) if model is not None else {}, options=BROADCAST_FROM_RANK0)

    @torch.no_grad()
    def _broadcast_buffers(self) -> None:
        """Process 0's buffers into every process's: ``to_empty`` left them uninitialized, and some
        (RoPE's inverse frequencies) are in no state dict."""
        source = dict(self.host_copy.named_buffers()) if self.is_main else {}
        for name, buffer in self.student.named_buffers():
            if self.is_main:
                buffer.copy_(source[name])
            dist.broadcast(buffer, src=0)

    def resume(self, model_dir: str) -> int:
        """Read this process's shard of the previous round's AdamW state; the global step."""
        if (Path(model_dir) / TRAINER_STATE).exists():
            raise SystemExit(f"{model_dir} was trained with train.launcher=none; a run keeps one launcher")
        state_dir = Path(model_dir) / SHARDED_TRAINER_STATE
        if not state_dir.exists():
            return 0
        state = {"optimizer": get_optimizer_state_dict(self.wrapped, self.optimizer), "global_step": 0}
        dcp.load(state, checkpoint_id=str(state_dir))
        set_optimizer_state_dict(self.wrapped, self.optimizer, state["optimizer"])
        return int(state["global_step"])

    def shard(self, chunks: list) -> list[tuple[list, float]]:
        """This process's micro-batches, each with its weight in the loss. Every process must run as
        many forward/backward passes as the others (each one is a collective), so those with fewer
        repeat a micro-batch with weight 0. A step without loss has none, on any process."""
        mine = chunks[self.rank :: self.world_size]
        passes = -(-len(chunks) // self.world_size)
        padding = [(chunks[0], 0.0)] * (passes - len(mine)) if len(mine) < passes else []
        return [(chunk, 1.0) for chunk in mine] + padding

    def forward(self, fn, *args, **kwargs):
        return self.wrapped(fn, *args, **kwargs)

    def parameters(self):
        return self.wrapped.parameters()

    def clip_grad_norm(self, max_norm: float) -> float:
        norm = torch.nn.utils.clip_grad_norm_(self.wrapped.parameters(), max_norm)
        # The norm of sharded gradients is a DTensor; full_tensor() is its value on every process,
        # so a non-finite norm skips the update on every process alike (train_step).
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def total(self, value: float) -> float:
        total = torch.tensor(value, device=self.device)
        dist.all_reduce(total)
        return total.item()

    def largest(self, value: float) -> float:
        largest = torch.tensor(value, device=self.device)
        dist.all_reduce(largest, op=dist.ReduceOp.MAX)
        return largest.item()

    @torch.no_grad()
    def update_ema(self, rate: float) -> None:
        for teacher, student in zip(self.ema, self.wrapped.parameters()):
            teacher.mul_(1.0 - rate).add_(student.detach(), alpha=rate)

    def write_checkpoint(self, out: str, tokenizer, optimizer, global_step: int, *, trains_on: bool = False) -> dict | None:
        """Every process: its AdamW shard, and its part in gathering the weights; process 0 writes
        them and makes the checkpoint appear whole (atomically) once every shard is on disk. Process
        0's host copy ends with the student's weights (a LoRA student's merged into a copy when it
        ``trains_on``); the EMA teacher's are returned there (``gather``)."""
        with (atomic_dir(out) if self.is_main else contextlib.nullcontext()) as tmp:
            chosen = [str(tmp) if self.is_main else None]
            dist.broadcast_object_list(chosen, src=0)
            tmp = Path(chosen[0])
            state = {"optimizer": get_optimizer_state_dict(self.wrapped, optimizer), "global_step": global_step}
            dcp.save(state, checkpoint_id=str(tmp / SHARDED_TRAINER_STATE))
            weights, ema = self._gathered_student_and_ema()
            if self.is_main:
                if ema is not None:
                    self.host_copy.load_state_dict(ema)
                    self.host_copy.save_pretrained(tmp / EMA_TEACHER)
                self.host_copy.load_state_dict(weights)
                save_student(self.host_copy, tmp, trains_on=trains_on)
                tokenizer.save_pretrained(tmp)
            dist.barrier()  # nobody leaves (or renames) before everything is written
        return ema

    def gather(self) -> dict | None:
        """Every process: the student's full weights into process 0's host copy (what a resident
        block pushes into its engine); the EMA teacher's full weights are returned there (None
        elsewhere, and without an EMA teacher)."""
        weights, ema = self._gathered_student_and_ema()
        if self.is_main:
            self.host_copy.load_state_dict(weights)
        return ema

    def _gathered_student_and_ema(self) -> tuple[dict | None, dict | None]:
        """The student's and the EMA teacher's full weights, complete on process 0 (None elsewhere,
        and the EMA's None without one)."""
        return self._gathered(), self._gathered_ema() if self.ema is not None else None

    def _gathered(self) -> dict | None:
        """The full weights, complete on process 0 (None elsewhere)."""
        state = get_model_state_dict(self.wrapped, options=GATHER_TO_RANK0)
        return {k.removeprefix(ROOT): v for k, v in state.items()} if self.is_main else None

    @torch.no_grad()
    def _gathered_ema(self) -> dict | None:
        """The EMA teacher's full weights: its shards gathered in the student's place."""
        own = [p.detach().clone() for p in self.wrapped.parameters()]
        for parameter, teacher in zip(self.wrapped.parameters(), self.ema):
            parameter.copy_(teacher)
        weights = self._gathered()
        for parameter, value in zip(self.wrapped.parameters(), own):
            parameter.copy_(value)
        return weights
