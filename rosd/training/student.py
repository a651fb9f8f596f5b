"""Where the distill stage's optimizer steps run, and on which weights (docs/gpu_slurm.md, "Training").

- One process (``train.launcher: none``, the default): plain torch on the CPU or one GPU. On CUDA
  with ``model.dtype: bfloat16`` the forward runs under bfloat16 autocast over float32 master weights.
- Several processes (``train.launcher: accelerate``): rosd/training/sharding.py, FSDP2 over the processes
  that ``accelerate launch`` starts. Process k takes micro-batches k, k + world_size, ... of a step.
  Gradients are averaged across processes, so each process scales its loss by world_size: the
  update is the one-process update.
- LoRA (``train.lora``, peft), gradient checkpointing (``train.gradient_checkpointing``) and an EMA
  teacher (``sdpo``), under either launcher.

A checkpoint holds the merged weights (a plain model every stage and vLLM can load), the LoRA adapter
under ``adapter/`` when there is one (its config names the base θ0, so the next round resumes the
same adapter on the same base), an EMA teacher under ``ema_teacher/``, and the AdamW state with the
global step: ``trainer_state.pt`` from one process, ``trainer_state/`` (one shard per process,
torch.distributed.checkpoint) from several. A run keeps one launcher throughout.
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import torch

from rosd.io.files import atomic_dir
from rosd.models.loading import load_model
from rosd.training.checkpoints import ADAPTER, EMA_TEACHER, TRAINER_STATE


def load_student(model_dir: str, train: dict, device: str):
    """The trainable student in float32: the previous checkpoint, or the base plus the previous
    round's LoRA adapter when it has one (a fresh adapter when ``train.lora`` is set and it has none)."""
    adapter, lora = Path(model_dir) / ADAPTER, train.get("lora")
    if adapter.exists() or lora:
        from peft import LoraConfig, PeftModel, get_peft_model
    if adapter.exists():
        base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
        student = PeftModel.from_pretrained(load_model(base, device=device), str(adapter), is_trainable=True)
    elif lora:
        config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], target_modules=lora["target_modules"], lora_dropout=0.0)
        student = get_peft_model(load_model(model_dir, device=device), config)
    else:
        student = load_model(model_dir, device=device)
    if train.get("gradient_checkpointing"):
        # Non-reentrant checkpointing also back-propagates into LoRA layers whose inputs need no grad.
        student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return student.train()


def save_student(student, out_dir: Path, *, trains_on: bool = False) -> None:
    """Write the student as a plain model. A LoRA student also writes its adapter, then merges it
    into the weights: in place when this is the last thing a round does with it, into a copy when
    it ``trains_on`` (a resident block's, rosd/stages/resident.py)."""
    if hasattr(student, "merge_and_unload"):
        student.save_pretrained(out_dir / ADAPTER)
        student = merged_copy(student) if trains_on else student.merge_and_unload()
    student.save_pretrained(out_dir)


def merged_copy(student) -> torch.nn.Module:
    """A copy of the student as a plain model, as its checkpoint holds it (a LoRA adapter merged into
    the copy's weights); the student itself trains on."""
    copied = copy.deepcopy(student)
    return copied.merge_and_unload() if hasattr(copied, "merge_and_unload") else copied


def plain_weights(student) -> dict[str, torch.Tensor]:
    """The student's weights under a plain model's names (what an engine is given): a LoRA student's
    merged into a copy; any other student's own tensors, not copied."""
    return merged_copy(student).state_dict() if hasattr(student, "merge_and_unload") else student.state_dict()


class SingleProcess:
    """Plain torch in this process: the default launcher."""

    rank, world_size, is_main = 0, 1, True

    def __init__(self, student, *, device: str, dtype: str, ema=None):
        self.student, self.ema = student, ema
        # bfloat16 needs no gradient scaler; float16 would, so it trains in float32 like the CPU.
        self._bfloat16 = device.startswith("cuda") and dtype == "bfloat16"

    def shard(self, chunks: list) -> list[tuple[list, float]]:
        return [(chunk, 1.0) for chunk in chunks]

    def forward(self, fn, *args, **kwargs):
        """``fn(student, *args, **kwargs)``: the loss terms of one micro-batch."""
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self._bfloat16 else contextlib.nullcontext()
        with autocast:
            return fn(self.student, *args, **kwargs)

    def parameters(self):
        return self.student.parameters()

    def clip_grad_norm(self, max_norm: float) -> float:
        return float(torch.nn.utils.clip_grad_norm_(self.student.parameters(), max_norm))

    def total(self, value: float) -> float:
        return value

    def largest(self, value: float) -> float:
        return value

    @torch.no_grad()
    def update_ema(self, rate: float) -> None:
        for teacher, student in zip(self.ema.parameters(), self.student.parameters()):
            teacher.mul_(1.0 - rate).add_(student, alpha=rate)

    def gather(self) -> None:
        """Nothing to gather: the student is whole in this process (``Sharded.gather``)."""
        return None

    def write_checkpoint(self, out: str, tokenizer, optimizer, global_step: int, *, trains_on: bool = False) -> None:
        with atomic_dir(out) as tmp:
            save_student(self.student, tmp, trains_on=trains_on)
            tokenizer.save_pretrained(tmp)
            torch.save({"optimizer": optimizer.state_dict(), "global_step": global_step}, tmp / TRAINER_STATE)
            if self.ema is not None:
                self.ema.save_pretrained(tmp / EMA_TEACHER)
