"""Scoring a response under a prompt: the log-probabilities of the rows that predict each response
token. Student and teacher read different prompts but the same response ids; in each model's own
sequence the logits predicting response token t sit one row before it."""

from __future__ import annotations

import torch


def response_logps(model, prompts: list[list[int]], responses: list[list[int]], *, temperature: float, pad_id: int):
    """Log-softmax (at ``temperature``) over the vocabulary for every response token.

    Returns ``(logp [B, T, V], mask [B, T])`` with T the longest response; sequences are right-padded,
    so row ``len(prompt) - 1 + t`` of sequence b predicts response token t.
    """
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    width = max(lengths)
    device = next(model.parameters()).device
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        ids[b, : lengths[b]] = torch.tensor(p + r)
        attention[b, : lengths[b]] = 1
    logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
    longest = max(len(r) for r in responses)
    rows = torch.zeros(len(prompts), longest, dtype=torch.long)
    mask = torch.zeros(len(prompts), longest)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        rows[b, : len(r)] = torch.arange(len(p) - 1, len(p) - 1 + len(r))
        mask[b, : len(r)] = 1
    picked = logits.gather(1, rows.to(device).unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    return torch.log_softmax(picked / temperature, dim=-1), mask.to(device)


def batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
