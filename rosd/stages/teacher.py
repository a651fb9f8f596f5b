"""Teacher scoring (SPEC §2): the teacher's log-probs on the student's support, per response token.

For each rollout in the loss, the round's student picks its top-k support from its own prompt and
the teacher (θ0 for the frozen teacher) scores the same response ids after its richer prompt.
"""

from __future__ import annotations

import logging
import time

import torch

from rosd.io import atomic_path, read_jsonl
from rosd.losses import add_tail
from rosd.modeling import load_model, load_tokenizer
from rosd.scoring import batches, response_logps

log = logging.getLogger(__name__)


@torch.no_grad()
def teacher_targets(teacher, student, rows: list[dict], *, support: str, topk: int, temperature: float, pad_id: int, micro_batch: int) -> list[dict]:
    """Per row: ``support`` ids [T, k] (None for the full vocabulary) and ``teacher_logp`` [T, k+1 or V]."""
    targets, started = [], time.time()
    for chunk in batches(rows, micro_batch):
        responses = [r["response_ids"] for r in chunk]
        t_logp, _ = response_logps(teacher, [r["teacher_prompt_ids"] for r in chunk], responses, temperature=temperature, pad_id=pad_id)
        if support == "topk_tail":
            s_logp, _ = response_logps(student, [r["prompt_ids"] for r in chunk], responses, temperature=temperature, pad_id=pad_id)
            ids = s_logp.topk(min(topk, s_logp.shape[-1]), dim=-1).indices
            t_logp = add_tail(t_logp.gather(-1, ids))
        for b, row in enumerate(chunk):
            n = len(row["response_ids"])
            targets.append(
                {
                    "support": ids[b, :n].to(torch.int32).cpu() if support == "topk_tail" else None,
                    "teacher_logp": t_logp[b, :n].float().cpu(),
                }
            )
        rate = len(targets) / max(time.time() - started, 1e-9)
        log.info("scored %d/%d rollouts (%.1f/s, ETA %.0fs)", len(targets), len(rows), rate, (len(rows) - len(targets)) / rate)
    return targets


def run_teacher_score(*, teacher: str, student: str, reflections: str, out: str, settings: dict) -> None:
    rows = [r for r in read_jsonl(reflections) if r["in_loss"]]
    loss = settings["method"]["loss"]
    tokenizer = load_tokenizer(student)
    kwargs = dict(device=settings["device"], dtype=settings["dtype"])
    targets = teacher_targets(
        load_model(teacher, **kwargs).eval(),
        load_model(student, **kwargs).eval() if loss["support"] == "topk_tail" else None,
        rows,
        support=loss["support"],
        topk=loss["topk"],
        temperature=settings["train"]["temperature"],
        pad_id=tokenizer.pad_token_id,
        micro_batch=settings["train"]["micro_batch"],
    )
    with atomic_path(out) as tmp:
        torch.save({"support": loss["support"], "targets": targets}, tmp)
    log.info("wrote teacher targets of %d rollouts to %s", len(targets), out)
