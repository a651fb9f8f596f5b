"""What every generation backend returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Sample:
    """One sampled response: its token ids (the end-of-turn token included when produced), the
    decoded text (special tokens removed), and the sampler's log-probability of each sampled token
    (for the truncated importance weight of docs/method.md, "Loss")."""

    ids: list[int]
    text: str
    logps: list[float] = field(default_factory=list)
