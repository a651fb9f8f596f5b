"""Group filter, sibling solutions, self-reflection, error localization and teacher prompts
(SPEC §1.3-1.7) for one round and method."""

from __future__ import annotations

import logging
import random
from collections import defaultdict

from rosd.engines import load_engine
from rosd.io import read_jsonl, write_jsonl
from rosd.methods import needs_reflection
from rosd.prompts import chat_prompt_ids, reflection_messages, teacher_messages
from rosd.reflection import find_quote, loss_start, parse_reflection

log = logging.getLogger(__name__)


def mark_groups(rows: list[dict], *, group_filter: str = "zero_variance", skip_no_success: bool = True, sibling: str = "first", seed: int = 0) -> None:
    """Set ``in_loss`` and ``sibling`` (a correct rollout of the same group other than this one).

    The zero-variance filter (ref) drops groups whose rollouts all agree, which also drops groups
    with no success; ``sibling`` is the first other correct rollout (ref) or a seeded random one.
    """
    rng = random.Random(seed)
    groups = defaultdict(list)
    for row in rows:
        groups[row["group"]].append(row)
    for members in groups.values():
        rewards = {m["reward"] for m in members}
        keep = len(rewards) > 1 if group_filter == "zero_variance" else True
        if skip_no_success and 1.0 not in rewards:
            keep = False
        for m in members:
            m["in_loss"] = keep
            others = [o["response"] for o in members if o is not m and o["reward"] == 1.0]
            m["sibling"] = (others[0] if sibling == "first" else rng.choice(others)) if others else None


def teacher_context(row: dict, context: str) -> tuple[str | None, str | None]:
    """(solution, reflection) the teacher reads, by the method's teacher context."""
    solution = {
        "solution+reflection": row["sibling"],
        "solution": row["sibling"],
        "reflection": None,
        "reference": row["task"].get("solution"),
    }[context]
    reflection = row.get("explanation") if context in ("solution+reflection", "reflection") else None
    return solution, reflection


def true_error_hit(row: dict) -> bool | None:
    """Whether the found quote starts on the line of the true first error (world tasks only)."""
    if row["reward"] == 1.0 or row.get("quote_char") is None or not row["task"].get("steps"):
        return None
    from rosd.world.tasks import first_error_offset

    start = first_error_offset(row["task"], row["response"])
    if start is None:
        return None
    end = row["response"].find("\n", start)
    end = len(row["response"]) if end == -1 else end
    return start <= row["quote_char"] <= end


def reflect(engine, rows: list[dict], settings: dict) -> None:
    """One reflection per rollout by the current policy; parsed into quote and explanation."""
    refl = settings["reflection"]
    prompts = [
        chat_prompt_ids(
            engine.tokenizer,
            reflection_messages(r["task"], r["response"], correct=r["reward"] == 1.0, sibling=r["sibling"]),
            settings["enable_thinking"],
        )
        for r in rows
    ]
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


def run_reflect(*, model: str, graded: str, out: str, settings: dict) -> None:
    rows = read_jsonl(graded)
    method = settings["method"]
    mark_groups(rows, **settings["train"], seed=settings["seed"])
    kept = [r for r in rows if r["in_loss"]]
    engine = None
    if needs_reflection(method) and kept:
        gen = settings["generation"]
        engine = load_engine(
            gen["backend"], model, device=settings["device"], dtype=settings["dtype"], batch_size=gen["batch_size"],
            tensor_parallel_size=gen["tensor_parallel_size"],
        )
        reflect(engine, [r for r in kept if r["reward"] == 0.0 or settings["reflection"]["reflect_correct"]], settings)
    tokenizer = engine.tokenizer if engine else _tokenizer(model)
    for row in kept:
        localize(tokenizer, row, settings)
        if method["objective"] == "distill":
            solution, reflection = teacher_context(row, method["teacher_context"])
            messages = teacher_messages(row["task"], solution=solution, reflection=reflection)
            row["teacher_prompt_ids"] = chat_prompt_ids(tokenizer, messages, settings["enable_thinking"])
    write_jsonl(out, rows)
    log.info("%d of %d rollouts in loss; %d reflections parsed", len(kept), len(rows), sum(bool(r.get("parsed")) for r in kept))


def _tokenizer(model: str):
    from rosd.modeling import load_tokenizer

    return load_tokenizer(model)
