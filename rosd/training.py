"""Where the distill stage's optimizer steps run, and on which weights (SPEC §3, training).

- One process (``train.launcher: none``, the default): plain torch on the CPU or one GPU. On CUDA
  with ``model.dtype: bfloat16`` the forward runs under bfloat16 autocast over float32 master weights.
- Several processes (``train.launcher: accelerate``): ``accelerate launch`` with
  config/accelerate_fsdp.yaml, which shards weights, gradients and AdamW state over the GPUs (FSDP).
  Process k takes micro-batches k, k + world_size, ... of a step. Gradients are averaged across
  processes, so each process scales its loss by world_size: the update is the one-process update.
- LoRA (``train.lora``, peft) and gradient checkpointing (``train.gradient_checkpointing``).

A checkpoint holds the merged weights (a plain model every stage and vLLM can load), the LoRA adapter
under ``adapter/`` when there is one (its config names the base θ0, so the next round resumes the
same adapter on the same base), and trainer_state.pt (optimizer state and global step). One process
stores the optimizer state as torch's ``state_dict()``; accelerate stores it under
``optimizer_by_name``, keyed by parameter name. A run keeps one launcher throughout.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from rosd.checkpoints import ADAPTER, TRAINER_STATE
from rosd.modeling import load_model


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


def save_student(student, out_dir: Path, weights: dict | None = None) -> None:
    """Write the student as a plain model (``weights``, when given, are its full state dict gathered
    from the processes). A LoRA student also writes its adapter, then merges it into the weights
    in place: the last thing a round does with it."""
    if hasattr(student, "merge_and_unload"):
        student.save_pretrained(out_dir / ADAPTER)
        student = student.merge_and_unload()
    student.save_pretrained(out_dir, state_dict=weights)


class SingleProcess:
    """Plain torch in this process: the default launcher."""

    rank, world_size, is_main = 0, 1, True

    def __init__(self, student, *, device: str, dtype: str):
        self.student = student
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

    def full_state(self, optimizer) -> tuple[dict | None, dict]:
        """(weights, optimizer state) for the checkpoint; None weights: the student's own."""
        return None, {"optimizer": optimizer.state_dict()}

    def wait(self) -> None:
        pass


class CallInside(torch.nn.Module):
    """Runs ``fn(student, ...)`` as its forward. The loss reads the decoder's hidden states and
    projects them onto the vocabulary chunk by chunk; wrapped in this module, every use of the
    weights happens inside the forward that FSDP (or DDP) wraps, gathers and synchronizes."""

    def __init__(self, student):
        super().__init__()
        self.student = student
        # FSDP wraps each decoder layer: accelerate reads the layer class names from here.
        self._no_split_modules = getattr(student, "_no_split_modules", None)

    def forward(self, fn, *args, **kwargs):
        return fn(self.student, *args, **kwargs)


class Accelerated:
    """One of ``world_size`` processes started by ``accelerate launch`` (FSDP over GPUs) or, in the
    tests, by torchrun (DDP over CPU processes: the same code path with another wrapper)."""

    def __init__(self, student, train: dict, *, device: str):
        from accelerate import Accelerator

        self.accelerator = Accelerator(cpu=device == "cpu")
        optimizer = torch.optim.AdamW(student.parameters(), lr=train["lr"], weight_decay=train["weight_decay"])
        self.wrapped, self.optimizer = self.accelerator.prepare(CallInside(student), optimizer)
        self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process

    def resume(self, model_dir: str) -> int:
        """Load the previous round's optimizer state into this process's shard; the global step."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        path = Path(model_dir) / TRAINER_STATE
        if not path.exists():
            return 0
        state = torch.load(path, weights_only=True)
        if "optimizer_by_name" not in state:
            raise SystemExit(f"{model_dir} was trained with train.launcher=none; a run keeps one launcher")
        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(self.wrapped, self.optimizer.optimizer, state["optimizer_by_name"], options=options)
        return int(state["global_step"])

    def shard(self, chunks: list) -> list[tuple[list, float]]:
        """This process's micro-batches, each with its weight in the loss. Every process must run as
        many forward/backward passes as the others (each one is a collective), so those with fewer
        repeat a micro-batch with weight 0."""
        mine = chunks[self.rank :: self.world_size]
        passes = -(-len(chunks) // self.world_size)
        return [(chunk, 1.0) for chunk in mine] + [(chunks[0], 0.0)] * (passes - len(mine))

    def forward(self, fn, *args, **kwargs):
        return self.wrapped(fn, *args, **kwargs)

    def parameters(self):
        return self.wrapped.parameters()

    def clip_grad_norm(self, max_norm: float) -> float:
        norm = self.accelerator.clip_grad_norm_(self.wrapped.parameters(), max_norm)
        # Under FSDP the norm may come back as a DTensor; full_tensor() is its value on every process.
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def total(self, value: float) -> float:
        return self.accelerator.reduce(torch.tensor(value, device=self.accelerator.device), "sum").item()

    def full_state(self, optimizer) -> tuple[dict, dict]:
        """The full weights and optimizer state, gathered from every process (a collective: every
        process calls it); complete on the main process."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        prefix = "student."
        weights = {k.removeprefix(prefix): v for k, v in self.accelerator.get_state_dict(self.wrapped).items()}
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_optimizer_state_dict(self.wrapped, optimizer.optimizer, options=options)
        return weights, {"optimizer_by_name": state}

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()
