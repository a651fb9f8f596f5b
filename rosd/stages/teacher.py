"""Teacher scoring (docs/method.md, "Teacher scoring"): the teacher's log-probs on the student's
support, per response token.

For each rollout in the loss, the round's student picks its top-k support from its own prompt and
the teacher scores the same response ids after its richer prompt. The teacher is θ0 (frozen), the
EMA weights the previous round saved beside its checkpoint (ema), or the round's student (live).
"""

from __future__ import annotations

import logging
import time

import torch

from rosd.io.files import read_jsonl, write_torch
from rosd.method.losses import add_tail
from rosd.method.mechanism import row_sums, support_kl, top1_disagreement
from rosd.method.scoring import batches, logp_of, response_tokens
from rosd.models.loading import load_tokenizer
from rosd.stages import resident

log = logging.getLogger(__name__)


@torch.no_grad()
def teacher_targets(teacher, student, rows: list[dict], *, support: str, topk: int, temperature: float, pad_id: int, micro_batch: int, token_chunk: int) -> tuple[list[dict], list[dict | None]]:
    """(targets, mechanism). Per row, a target: ``support`` ids [T, k] (None otherwise) and
    ``teacher_logp``: [T, k+1] on the student's top-k + tail, [T, V] for the full vocabulary, [T]
    on the sampled token. The vocabulary projection runs over chunks of ``token_chunk`` tokens.
    On the top-k + tail support, where the student's log-probs are at hand, also the row's
    mechanism sums (rosd.method.mechanism.row_sums; None on other supports): diagnostics only."""
    # Micro-batches of similar lengths waste less padding: score rows in order of the teacher's
    # sequence length, return them in row order.
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["teacher_prompt_ids"]) + len(rows[i]["response_ids"]))
    scored, measured, started = [], [], time.time()
    for chunk in batches([rows[i] for i in order], micro_batch):
        responses = [r["response_ids"] for r in chunk]
        t_hidden = response_tokens(teacher, [r["teacher_prompt_ids"] for r in chunk], responses, pad_id=pad_id)
        s_hidden = response_tokens(student, [r["prompt_ids"] for r in chunk], responses, pad_id=pad_id) if support == "topk_tail" else None
        sampled = torch.cat([torch.tensor(r) for r in responses]).to(t_hidden.device)
        ids, logps, kls, disagreements = [], [], [], []
        for start in range(0, t_hidden.shape[0], token_chunk):
            stop = min(start + token_chunk, t_hidden.shape[0])
            t_logp = logp_of(teacher, t_hidden[start:stop], temperature)
            if support == "topk_tail":
                s_logp = logp_of(student, s_hidden[start:stop], temperature)
                top = s_logp.topk(min(topk, t_logp.shape[-1]), dim=-1).indices
                ids.append(top)
                disagreements.append(top1_disagreement(t_logp.argmax(-1), sampled[start:stop]).cpu())
                t_logp = add_tail(t_logp.gather(-1, top))
                kls.append(support_kl(t_logp, add_tail(s_logp.gather(-1, top))).cpu())
            elif support == "sampled_token":
                t_logp = t_logp.gather(-1, sampled[start:stop, None]).squeeze(-1)
            logps.append(t_logp.cpu())
        lengths = [len(r) for r in responses]
        all_logp = torch.cat(logps).split(lengths)
        all_ids = torch.cat(ids).to(torch.int32).cpu().split(lengths) if ids else [None] * len(chunk)
        scored += [{"support": i, "teacher_logp": t} for i, t in zip(all_ids, all_logp)]
        if kls:
            per_token = zip(torch.cat(kls).split(lengths), torch.cat(disagreements).split(lengths))
            measured += [row_sums(kl, d, r.get("reward") == 1.0, r.get("first_error_token")) for r, (kl, d) in zip(chunk, per_token)]
        else:
            measured += [None] * len(chunk)
        rate = len(scored) / max(time.time() - started, 1e-9)
        log.info("scored %d/%d rollouts (%.1f/s, ETA %.0fs)", len(scored), len(rows), rate, (len(rows) - len(scored)) / rate)
    targets, mechanism = [None] * len(rows), [None] * len(rows)
    for row, target, sums in zip(order, scored, measured):
        targets[row], mechanism[row] = target, sums
    return targets, mechanism


def teacher_model(kind: str, theta0: str, student: str, settings: dict):
    """The round's teacher: θ0 (frozen), the EMA weights the previous round kept with its
    checkpoint (ema; the student's own before there are any), or the student itself (live)."""
    if kind == "frozen":
        return resident.scoring_model(theta0, settings, frozen=True)
    ema = resident.ema_teacher(student, settings) if kind == "ema" else None
    return ema if ema is not None else resident.scoring_model(student, settings)


def run_teacher_score(*, teacher: str, student: str, reflections: str, out: str, settings: dict) -> None:
    method = settings["method"]
    rows = [r for r in read_jsonl(reflections) if r["distilled"]]
    targets, mechanism = [], []
    if method["objective"] == "distill" and rows:
        loss = method["loss"]
        targets, mechanism = teacher_targets(
            teacher_model(method["teacher"], teacher, student, settings),
            resident.scoring_model(student, settings) if loss["support"] == "topk_tail" else None,
            rows,
            support=loss["support"],
            topk=loss["topk"],
            temperature=settings["train"]["temperature"],
            pad_id=load_tokenizer(student).pad_token_id,
            micro_batch=settings["train"]["micro_batch"],
            token_chunk=settings["train"]["token_chunk"],
        )
    write_torch(out, {"targets": targets, "mechanism": mechanism})
    log.info("wrote teacher targets of %d rollouts to %s", len(targets), out)
