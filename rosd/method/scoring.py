"""Scoring a response under a prompt. Student and teacher read different prompts but the same
response ids; in each model's own sequence the row that predicts response token t sits one
before it. Rows are gathered from the decoder's hidden states, so the vocabulary projection
can run over chunks of tokens instead of a whole [tokens × vocabulary] tensor at once."""

from __future__ import annotations

import torch


def response_hidden(model, prompts: list[list[int]], responses: list[list[int]], *, pad_id: int):
    """Final hidden states of the rows predicting each response token: ``([B, T, H], mask [B, T])``,
    T the longest response; sequences are right-padded."""
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    device = next(model.parameters()).device
    ids = torch.full((len(prompts), max(lengths)), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        ids[b, : lengths[b]] = torch.tensor(p + r)
        attention[b, : lengths[b]] = 1
    hidden = model.get_decoder()(input_ids=ids.to(device), attention_mask=attention.to(device)).last_hidden_state
    longest = max(len(r) for r in responses)
    rows = torch.zeros(len(prompts), longest, dtype=torch.long)
    mask = torch.zeros(len(prompts), longest, dtype=torch.bool)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        rows[b, : len(r)] = torch.arange(len(p) - 1, len(p) - 1 + len(r))
        mask[b, : len(r)] = True
    picked = hidden.gather(1, rows.to(device).unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    return picked, mask.to(device)


def response_tokens(model, prompts, responses, *, pad_id: int) -> torch.Tensor:
    """The response rows' hidden states, flattened to ``[N, H]`` (row b's tokens in order, then b+1)."""
    hidden, mask = response_hidden(model, prompts, responses, pad_id=pad_id)
    return hidden[mask]


def logp_of(model, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-softmax over the vocabulary (float32, at ``temperature``) of the given hidden states."""
    return torch.log_softmax(model.get_output_embeddings()(hidden).float() / temperature, dim=-1)


def response_logps(model, prompts, responses, *, temperature: float, pad_id: int):
    """``(logp [B, T, V], mask [B, T])`` for every response token: the unchunked view, for short inputs."""
    hidden, mask = response_hidden(model, prompts, responses, pad_id=pad_id)
    return logp_of(model, hidden, temperature), mask.float()


def batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
