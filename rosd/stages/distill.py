"""Training (docs/method.md, "Loss" and "Update"): round r's training steps, checkpoint r-1 ->
checkpoint r.

The checkpoint carries the AdamW moments and the global step, so rounds resume one optimizer
(restarting AdamW each round would make every round's first step a sign step), and, for an EMA
teacher, the teacher's weights. The objective is the distillation loss, or GRPO for that baseline.
The global step counts training steps, not optimizer updates: GRPO's mini-batch updates of one
step share its warm-up lr (ref: the lr scheduler steps once per training step).
"""

from __future__ import annotations

import logging
import time
from statistics import mean

import torch

from rosd.io.files import CorruptOutputError, read_output, read_torch, write_json
from rosd.method.groups import group_advantages
from rosd.method.mechanism import round_metrics
from rosd.method.objective import step_updates
from rosd.method.presets import unsupported
from rosd.method.statistics import round_stats
from rosd.method.sync_guard import summary, verdict
from rosd.models.loading import load_tokenizer
from rosd.stages import resident
from rosd.training.steps import record_old_logps, train_step

log = logging.getLogger(__name__)


def _teacher_targets(teacher_scores: str, reflections: str, rows: list[dict], method: dict):
    """The teacher stage's targets, one per distilled row in file order (none unless the objective
    is distillation), and its mechanism sums (rosd.method.mechanism; none from a file written
    without them); a file that does not hold exactly those targets is a `CorruptOutputError`."""
    saved = read_torch(teacher_scores)
    targets = saved.get("targets") if isinstance(saved, dict) else None
    expected = sum(bool(r["distilled"]) for r in rows) if method["objective"] == "distill" else 0
    if not isinstance(targets, list) or len(targets) != expected:
        found = f"{len(targets)} teacher targets" if isinstance(targets, list) else "no list of teacher targets"
        raise CorruptOutputError(teacher_scores, None, f"holds {found}, {reflections} has {expected} distilled rollouts")
    return iter(targets), saved.get("mechanism") or []


def _guard(gap: dict, train: dict) -> None:
    """Warn (or, with ``train.sampler_gap_error``, stop) when the round's rollouts were not sampled
    from the weights this round starts from."""
    if problem := verdict(gap, train.get("sampler_gap_limit")):
        if train.get("sampler_gap_error"):
            raise SystemExit(problem)
        log.warning("%s", problem)


def run_distill(*, model: str, reflections: str, teacher_scores: str, out_model: str, out_metrics: str, settings: dict) -> None:
    started = time.time()
    torch.manual_seed(settings["seed"] * 100_003 + settings["round"])
    method, train = settings["method"], settings["train"]
    rows = read_output(reflections)
    if method["objective"] == "grpo":
        group_advantages([r for r in rows if r["in_loss"]])
    scored, mechanism = _teacher_targets(teacher_scores, reflections, rows, method)
    targets = [next(scored) if r["distilled"] and method["objective"] == "distill" else None for r in rows]
    if problem := unsupported(method, train):
        raise SystemExit(problem)
    tokenizer = load_tokenizer(model)
    # loaded from checkpoint ``model``, or, inside a resident block, held in memory (rosd.stages.resident)
    trainer = resident.trainer(model, train, method, device=settings["device"], dtype=settings["dtype"])
    runtime = trainer.runtime
    student, optimizer, global_step = runtime.student, trainer.optimizer, trainer.global_step
    settings = dict(settings, pad_id=tokenizer.pad_token_id)
    steps = []
    total, steps_started = train["steps_per_round"], time.time()
    for step in range(total):
        index = [i for i, r in enumerate(rows) if r["step"] == step]
        step_rows, step_targets = [rows[i] for i in index], [targets[i] for i in index]
        if not any(r["distilled"] for r in step_rows):
            log.info("step %d: no rollout with loss (all groups filtered): AdamW steps on a zero gradient", step)
        if method["objective"] == "grpo":
            record_old_logps(runtime, step_rows, settings=settings)
        for update_rows, update_targets in step_updates(step_rows, step_targets, method):
            result = train_step(student, optimizer, update_rows, update_targets, settings=settings, global_step=global_step, runtime=runtime)
            if not steps:
                _guard(result["sampler_gap"], train)
            steps.append(result)
            if result["skipped"]:
                log.warning("step %d (global %d): gradient norm %s, update skipped", step + 1, global_step + 1, result["grad_norm"])
            if runtime.ema is not None and not result["skipped"]:  # ref: the teacher follows only an update
                runtime.update_ema(method["ema_rate"])
            rate = (step + 1) / max(time.time() - steps_started, 1e-9)  # steps/s, for the ETA of the round
            log.info(
                "step %d/%d (global %d): loss %.4f grad_norm %.3f lr %.2e (%.2f steps/s, ETA %.0fs)",
                step + 1, total, global_step + 1, result["loss"], result["grad_norm"], result["lr"], rate, (total - step - 1) / rate,
            )
        global_step += 1  # one training step, however many updates it took
    # The checkpoint, or, inside a resident block, the weights kept in memory. Under several
    # processes every one takes part; the main one writes.
    resident.finish_round(trainer, out_model, tokenizer, global_step)
    if not runtime.is_main:
        return None
    metrics = {
        "method": settings["method_name"], "target": settings["target"], "seed": settings["seed"], "round": settings["round"],
        "step": global_step,
        "loss": mean(s["loss"] for s in steps) if steps else None,
        "grad_norm": mean(norms) if (norms := [s["grad_norm"] for s in steps if not s["skipped"]]) else None,
        "optimizer_steps": len(steps),
        **round_stats(rows),
        # where the teacher pulls the student (diagnostics; rosd.method.mechanism)
        **round_metrics(mechanism),
        # updates skipped for a non-finite gradient norm (ref dp_actor)
        "nonfinite_grad_steps": sum(s["skipped"] for s in steps),
        # the weight-sync guard, on the round's first update (rosd.method.sync_guard)
        **(steps[0]["sampler_gap"] if steps else summary(0.0, 0.0, 0.0, 0)),
    }
    if rows and "train_prompts_dropped" in rows[0]:
        # only under data.max_prompt_tokens: train prompts the rollouts stage left out as too long
        metrics["train_prompts_dropped"] = rows[0]["train_prompts_dropped"]
    # No wall-clock time in the metrics: the same seed gives the same file (the rule's benchmark
    # file records the job's seconds).
    write_json(out_metrics, metrics)
    log.info("round %d done in %.1fs: %s", settings["round"], time.time() - started, metrics)
