"""What a round logs about its rollouts, reflections and localization (docs/method.md, "Logged per
round"): pure functions of the reflect stage's rows."""

from __future__ import annotations

import math
from collections import Counter
from statistics import mean


def round_stats(rows: list[dict]) -> dict:
    """Rollout, reflection and localization statistics of one round (docs/method.md, "Logged per round")."""
    kept = [r for r in rows if r["in_loss"]]
    wrong = [r for r in kept if r["reward"] == 0.0]
    reflected = [r for r in kept if "parsed" in r]
    found = [r for r in wrong if r.get("quote_char") is not None]
    judged = [r["first_error_hit"] for r in found if r.get("first_error_hit") is not None]
    tokens = sum(len(r["response_ids"]) for r in kept)

    def rate(values):  # a float even when every value is the same bool (a column's type must not vary)
        return float(mean(values)) if values else None

    def loss_tokens(reward):
        """Share of the response tokens carrying loss among kept rollouts of this reward."""
        own = [r for r in kept if r["reward"] == reward]
        total = sum(len(r["response_ids"]) for r in own)
        return sum(len(r["response_ids"]) - r["loss_start"] for r in own if r["distilled"]) / total if total else None

    return {
        "n_rollouts": len(rows),
        "rollout_accuracy": rate([r["reward"] for r in rows]),
        "kept_group_frac": rate([r["in_loss"] for r in rows]),
        "reflection_parse_rate": rate([float(r["parsed"]) for r in reflected]),
        "quote_found_rate": rate([float(r.get("quote_char") is not None) for r in wrong]) if reflected else None,
        "quote_start_frac": rate([r["quote_char"] / max(len(r["response"]), 1) for r in found]),
        "loss_token_frac": (sum(len(r["response_ids"]) - r["loss_start"] for r in kept if r["distilled"]) / tokens) if tokens else None,
        "first_error_hit_rate": rate([float(h) for h in judged]),
        "loss_token_frac_wrong": loss_tokens(0.0),
        "loss_token_frac_correct": loss_tokens(1.0),
        **path_stats(rows),
        # the per-sample mask: rollouts of kept groups whose teacher had no context (ref: no loss)
        "rows_without_teacher_signal": sum(not r["distilled"] for r in kept),
        "reflection_prompts_cut": sum(bool(r.get("reflection_prompt_tokens_cut")) for r in kept),
        "teacher_prompts_cut": sum(bool(r.get("teacher_prompt_cut")) for r in kept),
        # how many found quotes start this many lines from the true first error (world tasks)
        "quote_line_offsets": dict(sorted(Counter(
            r["quote_line_offset"] for r in found if r.get("quote_line_offset") is not None).items())),
    }


def path_stats(rows: list[dict]) -> dict:
    """Which solution paths the round's correct rollouts took (world tasks: the rows' ``path``, every
    group kept or not): ``path_entropy``, the entropy in nats of the paths pooled over the round (0:
    one path only); ``reference_path_share``, the share on the canonical path (the reference
    solution's order); ``sibling_path_share``, among those with a sibling solution, the share that
    took its path (imitation within the group). None where no rollout has one."""
    solved = [r for r in rows if r["reward"] == 1.0 and r.get("path") is not None]
    with_sibling = [r for r in solved if r.get("sibling_path") is not None]
    counts = Counter(tuple(r["path"]) for r in solved)
    return {
        "path_entropy": sum(-n / len(solved) * math.log(n / len(solved)) for n in counts.values()) if solved else None,
        "reference_path_share": mean(float(tuple(r["path"]) == tuple(range(len(r["task"]["steps"])))) for r in solved) if solved else None,
        "sibling_path_share": mean(float(tuple(r["path"]) == tuple(r["sibling_path"])) for r in with_sibling) if with_sibling else None,
    }
