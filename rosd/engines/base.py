"""The one interface every generation backend implements (`GenerationEngine`), and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class Sample:
    """One sampled response: its token ids (the end-of-turn token included when produced), the
    decoded text (special tokens removed), and the sampler's log-probability of each sampled token
    (for the truncated importance weight of docs/method.md, "Loss")."""

    ids: list[int]
    text: str
    logps: list[float] = field(default_factory=list)


@runtime_checkable
class GenerationEngine(Protocol):
    """What the rollouts, reflect and evaluate stages and the world's measures ask of a backend:
    its tokenizer (prompts are token ids with the chat template applied) and seeded sampling."""

    tokenizer: Any

    def generate(
        self,
        prompts: list[list[int]],
        *,
        n: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        seed: int,
        top_k: int | None = None,
    ) -> list[list[Sample]]:
        """``n`` samples for each prompt, returned per prompt; the same seed gives the same samples.
        ``top_k`` None (or 0) samples from the whole nucleus."""
        ...

    def load_weights(self, state_dict: dict) -> None:
        """Replace the engine's weights with ``state_dict`` (a checkpoint's names and shapes) in
        memory: the next ``generate`` samples from them."""
        ...

    def sleep(self) -> None:
        """Free what generation holds while the trainer runs (a resident block on a GPU); the next
        ``load_weights`` brings the engine back."""
        ...
