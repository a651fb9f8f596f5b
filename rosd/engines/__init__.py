"""Generation backends behind one interface (`GenerationEngine`): `load_engine(name, model_dir, ...)`.
"hf" (transformers ``generate``, CPU or CUDA) is always there; "vllm" is imported only when chosen.
May import ``rosd.models`` and below.
"""

from __future__ import annotations

from rosd.engines.base import GenerationEngine, Sample


def load_engine(name: str, model_dir: str, *, tensor_parallel_size: int = 1, resident: bool = False, **options) -> GenerationEngine:
    """``resident``: a block of rounds holds the engine and pushes weights into it (vLLM then runs
    in this process, and sleeps on a GPU while the trainer runs; the HF engine is in-process anyway)."""
    if name == "hf":
        if tensor_parallel_size != 1:
            raise SystemExit("generation.tensor_parallel_size > 1 needs generation.backend=vllm")
        from rosd.engines.hf import HFEngine

        return HFEngine(model_dir, **options)
    if name == "vllm":
        from rosd.engines.vllm import VLLMEngine

        return VLLMEngine(model_dir, tensor_parallel_size=tensor_parallel_size, resident=resident, **options)
    raise ValueError(f"unknown generation backend {name!r}; expected 'hf' or 'vllm'")


__all__ = ["GenerationEngine", "Sample", "load_engine"]
