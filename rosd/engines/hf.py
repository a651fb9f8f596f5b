"""Hugging Face generation: batched, left-padded ``generate`` with a KV cache, on CPU or CUDA."""

from __future__ import annotations

import logging
import time

import torch

from rosd.engines.base import Sample
from rosd.modeling import load_model, load_tokenizer

log = logging.getLogger(__name__)


class HFEngine:
    def __init__(self, model_dir: str, *, device: str = "cpu", dtype: str = "float32", batch_size: int = 64):
        self.tokenizer = load_tokenizer(model_dir)
        self.model = load_model(model_dir, device=device, dtype=dtype).eval()
        self.device = device
        self.batch_size = batch_size

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
    ) -> list[list[Sample]]:
        """``n`` samples for each prompt (token ids, chat template applied); returns them per prompt."""
        torch.manual_seed(seed)
        jobs = [(p, j) for p in range(len(prompts)) for j in range(n)]
        # Similar lengths in one batch waste less padding.
        jobs.sort(key=lambda job: len(prompts[job[0]]))
        out: list[list[Sample | None]] = [[None] * n for _ in prompts]
        tok = self.tokenizer
        eos = tok.eos_token_id
        started, done = time.time(), 0
        for b in range(0, len(jobs), self.batch_size):
            batch = jobs[b : b + self.batch_size]
            width = max(len(prompts[p]) for p, _ in batch)
            ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, (p, _) in enumerate(batch):
                ids[row, width - len(prompts[p]) :] = torch.tensor(prompts[p])
                mask[row, width - len(prompts[p]) :] = 1
            result = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                top_p=top_p if temperature > 0 else None,
                top_k=None,
                max_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=eos,
                return_dict_in_generate=True,
                output_logits=True,
            )
            new = result.sequences[:, width:]
            # The sampled tokens' log-probs, step by step on the model's device: stacking every
            # step's [batch, vocab] logits first would hold batch × length × vocab floats at once.
            chosen = torch.stack(
                [
                    torch.log_softmax(logits.float() / max(temperature, 1e-6), dim=-1).gather(-1, new[:, t, None]).squeeze(-1)
                    for t, logits in enumerate(result.logits)
                ],
                dim=1,
            ).cpu()
            new = new.cpu()
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
