"""Generation backends behind one interface: `load_engine(name, model_dir, ...)`.

"hf" (transformers ``generate``, CPU or CUDA) is always there; "vllm" is imported only when chosen.
"""

from __future__ import annotations

from rosd.engines.base import Sample


def load_engine(name: str, model_dir: str, **options):
    if name == "hf":
        from rosd.engines.hf import HFEngine

        return HFEngine(model_dir, **options)
    raise ValueError(f"unknown generation backend {name!r}; expected 'hf'")


__all__ = ["Sample", "load_engine"]
