"""Hugging Face generation: batched, left-padded ``generate`` with a KV cache, on CPU or CUDA."""

from __future__ import annotations

import logging
import time

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from rosd.engines.base import Sample
from rosd.models.loading import load_model, load_tokenizer

log = logging.getLogger(__name__)


class HFEngine:
    def __init__(self, model_dir: str, *, device: str = "cpu", dtype: str = "float32", batch_size: int = 64):
        self.tokenizer = load_tokenizer(model_dir)
        self.model = load_model(model_dir, device=device, dtype=dtype).eval()
        self.device = device
        self.batch_size = batch_size

    def load_weights(self, state_dict: dict) -> None:
        """Replace the model's weights in memory (a resident block's push after each round), cast
        to the engine's dtype as loading that checkpoint from disk would."""
        self.model.load_state_dict(state_dict)

    def sleep(self) -> None:
        """Nothing to free: the HF engine's model is small beside the trainer's state, and a
        resident block scores with it when it holds the trainer's weights."""

    @torch.no_grad()
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
        torch.manual_seed(seed)
        jobs = [(p, j) for p in range(len(prompts)) for j in range(n)]
        # Similar lengths in one batch waste less padding.
        jobs.sort(key=lambda job: len(prompts[job[0]]))
        out: list[list[Sample | None]] = [[None] * n for _ in prompts]
        tok = self.tokenizer
        eos = tok.eos_token_id
        started, done = time.time(), 0
        before = processors_before_recorder(self.model.generation_config)
        if before:
            log.warning("generation_config sets %s: its processors change the logits before the sampler log-probs are recorded",
                        ", ".join(before))
        for b in range(0, len(jobs), self.batch_size):
            batch = jobs[b : b + self.batch_size]
            width = max(len(prompts[p]) for p, _ in batch)
            ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, (p, _) in enumerate(batch):
                ids[row, width - len(prompts[p]) :] = torch.tensor(prompts[p])
                mask[row, width - len(prompts[p]) :] = 1
            new, chosen = self._generate_batch(ids, mask, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens)
            for row, (p, j) in enumerate(batch):
                seq = new[row].tolist()
                length = seq.index(eos) + 1 if eos in seq else len(seq)
                out[p][j] = Sample(
                    ids=seq[:length],
                    text=tok.decode(seq[:length], skip_special_tokens=True),
                    logps=chosen[row, :length].tolist(),
                )
            done += len(batch)
            rate = done / max(time.time() - started, 1e-9)
            log.info("generated %d/%d samples (%.1f/s, ETA %.0fs)", done, len(jobs), rate, (len(jobs) - done) / rate)
        return out  # type: ignore[return-value]

    def generate_arguments(self, ids, mask, *, temperature: float, top_p: float, top_k: int | None, max_new_tokens: int) -> dict:
        """``model.generate``'s arguments for one left-padded batch."""
        return dict(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=top_p if temperature > 0 else None,
            # 0, not None: None would let a model's generation_config.json (Qwen3: 20) decide.
            top_k=top_k or 0,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            return_dict_in_generate=True,
        )

    def _generate_batch(
        self, ids: torch.Tensor, mask: torch.Tensor, *, temperature: float, top_p: float, top_k: int | None, max_new_tokens: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One left-padded batch: the new token ids [batch, steps] and their sampler log-probs
        [batch, steps], both on the CPU. The log-probs are recorded step by step (``SampledLogprobs``)
        rather than from ``output_logits=True``, which would keep every step's [batch, vocabulary]
        logits until the batch ends (64 × 8,192 × 151,936 float32 ≈ 320 GB at Qwen3 scale)."""
        recorder = SampledLogprobs(temperature)
        result = self.model.generate(
            **self.generate_arguments(ids, mask, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens),
            logits_processor=LogitsProcessorList([recorder]),
        )
        new = result.sequences[:, ids.shape[1] :]
        return new.cpu(), recorder.logps(new).cpu()


class SampledLogprobs(LogitsProcessor):
    """Records each step's sampled-token log-prob, log_softmax(logits / temperature) over the whole
    vocabulary (temperature 0, greedy: 1e-6), holding one step's [batch, vocabulary] at a time.

    ``generate`` puts a caller's processors after those its generation config asks for and before
    temperature, top-k and top-p, so this one sees the raw logits (unless the generation config
    sets a processor of its own: ``processors_before_recorder``) and the log-probs are those of the
    untruncated distribution. The token sampled at step t is only known at step t + 1 (the last
    column of ``input_ids``), so step t's log-softmax waits until then; the last step's is picked
    by ``logps``. Scores are returned untouched: sampling, and so the samples, do not change."""

    def __init__(self, temperature: float):
        self.temperature = max(temperature, 1e-6)
        self.pending: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.pending is not None:
            self.steps.append(self.pending.gather(-1, input_ids[:, -1:]).squeeze(-1))
            self.pending = None
        self.pending = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def logps(self, new: torch.Tensor) -> torch.Tensor:
        """[batch, steps] log-probs of ``new``, the generated ids (``generate`` may have run, then
        undone, one step more than it returned: that step is dropped)."""
        steps = self.steps[: new.shape[1]]
        if len(steps) < new.shape[1]:
            steps.append(self.pending.gather(-1, new[:, len(steps), None].to(self.pending.device)).squeeze(-1))
        self.pending, self.steps = None, []
        assert len(steps) == new.shape[1], (len(steps), new.shape)
        return torch.stack(steps, dim=1)


def processors_before_recorder(generation_config: GenerationConfig) -> list[str]:
    """The generation-config fields, set away from their defaults, whose logits processors
    ``generate`` runs before ``SampledLogprobs`` (so the recorded log-probs would include them)."""
    default = GenerationConfig()
    return [name for name in _BEFORE_RECORDER if getattr(generation_config, name, None) != getattr(default, name, None)]


_BEFORE_RECORDER = (
    "guidance_scale", "sequence_bias", "encoder_repetition_penalty", "repetition_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens",
)
