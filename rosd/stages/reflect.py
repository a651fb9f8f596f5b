"""Group filter, sibling solutions, self-reflection, error localization and teacher prompts
(docs/method.md, "Groups" to "Token mask") for one round and method."""

from __future__ import annotations

import json
import logging

from rosd.io.files import CorruptOutputError, read_output, write_jsonl
from rosd.method.groups import mark_groups, teacher_context
from rosd.method.presets import needs_reflection
from rosd.method.prompts import (
    chat_prompt_ids,
    fit_user_message,
    reflection_messages,
    teacher_messages,
)
from rosd.method.reflection import find_quote, loss_start, parse_reflection
from rosd.stages import resident
from rosd.stages.data import row_error
from rosd.stages.rollouts import ROLLOUT_KEYS, check_rollout_rows
from rosd.world.first_error import annotate_paths, quote_line_offset, true_error_hit

log = logging.getLogger(__name__)


def reflect(engine, rows: list[dict], settings: dict) -> None:
    """One reflection per rollout by the current policy, parsed into quote and explanation. A prompt
    longer than ``reflection.prompt_max_tokens`` loses the end of its user message (ref), counted in
    the row's ``reflection_prompt_tokens_cut``."""
    refl, thinking = settings["reflection"], settings["enable_thinking"]
    prompts = []
    for r in rows:
        messages = reflection_messages(r["task"], r["response"], correct=r["reward"] == 1.0, sibling=r["sibling"])
        messages, r["reflection_prompt_tokens_cut"] = fit_user_message(engine.tokenizer, messages, refl["prompt_max_tokens"], thinking)
        prompts.append(chat_prompt_ids(engine.tokenizer, messages, thinking))
    outputs = engine.generate(
        prompts, n=1, temperature=refl["temperature"], top_p=refl["top_p"],
        max_new_tokens=refl["max_new_tokens"], seed=settings["seed"] * 100_003 + settings["round"],
    )
    for row, (sample,) in zip(rows, outputs):
        parsed = parse_reflection(sample.text)
        row.update(reflection=sample.text, error_quote=parsed.error_quote, explanation=parsed.explanation, parsed=parsed.parsed)


def localize(tokenizer, row: dict, settings: dict) -> None:
    """Where a wrong rollout's loss starts: the quote's first token when the quote is found (and the
    method masks from the first error), else 0 — an unparsed reflection distills in full."""
    wrong = row["reward"] == 0.0
    quote = row.get("error_quote") if wrong else None
    row["quote_char"] = find_quote(row["response"], quote)
    row["loss_start"] = 0
    if settings["method"]["mask"] == "first_error" and wrong:
        mapping = settings["reflection"]["quote_mapping"]
        row["loss_start"] = loss_start(tokenizer, row["response"], row["response_ids"], quote, mapping)
    row["first_error_hit"] = true_error_hit(row)
    row["quote_line_offset"] = quote_line_offset(row)


def teacher_prompt(tokenizer, row: dict, settings: dict) -> None:
    """Set the row's teacher prompt and ``distilled``: whether the teacher has a context (ref: a
    rollout whose teacher reads neither a reflection nor a solution gets no loss at all). The prompt
    is cut from the right at ``train.teacher_prompt_max_tokens`` (ref), noted in ``teacher_prompt_cut``."""
    method, limit = settings["method"], settings["train"]["teacher_prompt_max_tokens"]
    solution, reflection = teacher_context(row, method["teacher_context"])
    wording = "opsd" if method["teacher_context"] == "reference" else "reference"
    messages = teacher_messages(row["task"], solution=solution, reflection=reflection, wording=wording)
    ids = chat_prompt_ids(tokenizer, messages, settings["enable_thinking"])
    cut = limit is not None and len(ids) > limit
    row.update(teacher_prompt_ids=ids[:limit] if cut else ids, teacher_prompt_cut=cut, distilled=bool(solution or reflection))


def check_graded(path: str, rows: list[dict], group_size: int) -> None:
    """Refuse, as one line naming ``path`` and the line, a graded file that is not what grade wrote:
    the rollout rows' checks, and every reward the verifier's 1.0 or 0.0 (a hand-edited 7 or "yes"
    would otherwise steer the group filter and the loss in silence)."""
    check_rollout_rows(path, rows, keys=(*ROLLOUT_KEYS, "reward"), group_size=group_size)
    for position, row in enumerate(rows):
        if type(row["reward"]) not in (int, float) or row["reward"] not in (0, 1):
            raise row_error(path, position, f"reward {json.dumps(row['reward'])[:40]} is not 0 or 1", CorruptOutputError)


def run_reflect(*, model: str, graded: str, out: str, settings: dict) -> None:
    rows = read_output(graded)
    method = settings["method"]
    train = settings["train"]
    check_graded(graded, rows, train["rollouts_per_prompt"])
    mark_groups(rows, group_filter=train["group_filter"], skip_no_success=train["skip_no_success"], sibling=train["sibling"], seed=settings["seed"])
    kept = [r for r in rows if r["in_loss"]]
    engine = None
    if needs_reflection(method) and kept:
        engine = resident.engine(model, settings)
        # Wrong rollouts are diagnosed against their sibling (a kept group always has one); correct
        # ones explained when reflect_correct (ref: reflection_include_for_correct).
        chosen = [r for r in kept if (r["reward"] == 0.0 and r["sibling"]) or (r["reward"] == 1.0 and settings["reflection"]["reflect_correct"])]
        reflect(engine, chosen, settings)
    tokenizer = engine.tokenizer if engine else _tokenizer(model)
    for row in rows:
        # Every row of a kept group carries loss, unless the distillation teacher has no context.
        row["distilled"] = row["in_loss"]
    for row in kept:
        localize(tokenizer, row, settings)
        if method["objective"] == "distill":
            teacher_prompt(tokenizer, row, settings)
    # Every rollout, kept or not: the mechanism metrics' paths and true first errors (world tasks;
    # methods that never quote map the first error exactly).
    mapping = settings.get("reflection", {}).get("quote_mapping", "offsets")
    for row in rows:
        annotate_paths(tokenizer, row, mapping)
    write_jsonl(out, rows)
    log.info(
        "%d of %d rollouts in kept groups, %d distilled; %d reflections parsed; prompts cut: %d reflection, %d teacher",
        len(kept), len(rows), sum(r["distilled"] for r in rows), sum(bool(r.get("parsed")) for r in kept),
        sum(bool(r.get("reflection_prompt_tokens_cut")) for r in kept), sum(bool(r.get("teacher_prompt_cut")) for r in kept),
    )


def _tokenizer(model: str):
    from rosd.models.loading import load_tokenizer

    return load_tokenizer(model)
