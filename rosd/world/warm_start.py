"""Warm start (docs/method.md, "Embedded world"): train the world's θ0 from scratch by supervised
learning.

θ0 must be imperfect but meaningful in all three roles of the method, so the supervised mix holds
solving (the student's prompt → the solution), reflecting (the reflector's prompt → the exact tag
format, quoting the true first wrong line) and teacher-style copying (the teacher's prompt → the
solution it was shown), over every task family, mostly the train target ``math``.

    python -m rosd.world.warm_start OUT --evaluate   # θ0's first stage: every role, from nothing

``--init-from MODEL --mix own_answers`` continues a model on diagnosing its own sampled wrong
answers, with those answers replayed to the student prompt: the shipped θ0 is the scratch model
continued three times so (theta0/README.md gives the four commands and what each stage measures).

The same rule teaches a real chat model the reflector's format (``--init-from`` a model directory,
``--mix reflection_format``, ``--lora-r``): that is how config/smollm2_cpu.yaml's adapter was made
(rosd/adapters/smollm2_reflection/README.md).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import random
import sys
import time
from typing import NamedTuple

import torch

from rosd.io.files import atomic_dir
from rosd.method.prompts import (
    chat_prompt_ids,
    reflection_messages,
    student_messages,
    teacher_messages,
)
from rosd.models.loading import load_model, load_tokenizer
from rosd.world.measure import evaluate, own_answers, own_wrong_answers, write_report
from rosd.world.model import build_model, train_tokenizer
from rosd.world.paths import path_solution
from rosd.world.tasks import (
    corrupt,
    explain_correct,
    explain_error,
    first_wrong_line,
    generate,
    quotable_first_wrong_line,
    sample,
    taught_path,
)

log = logging.getLogger(__name__)

# A mix is (family weights, role weights, the teacher contexts a "teach" example draws from).
MIXES = {
    # θ0 from nothing: every role over every family, mostly the train target math.
    "scratch": ({"math": 0.6, "math_long": 0.1, "mcq": 0.15, "tooluse": 0.15},
                {"solve": 0.35, "reflect_wrong": 0.35, "reflect_correct": 0.10, "teach": 0.20},
                ["reflection", "reflection", "solution", "both"]),
    # A real chat model that can add but does not write the reflector's tags (config/smollm2_cpu.yaml):
    # the reflection format on the world's additions, and boxed answers.
    "reflection_format": ({"math": 1.0}, {"solve": 0.2, "reflect_wrong": 0.6, "reflect_correct": 0.2}, []),
    # θ0 continued on math_paths, whose problems have several valid paths: every role, solutions
    # written along a random taught path, a teacher copying the path of the solution it reads.
    "paths": ({"math_paths": 0.55, "math": 0.15, "math_long": 0.1, "mcq": 0.1, "tooluse": 0.1},
              {"solve": 0.35, "reflect_wrong": 0.35, "reflect_correct": 0.10, "teach": 0.20},
              ["reflection", "reflection", "solution", "both"]),
    # The own-answer mix below on math_paths (``--own-family math_paths``).
    "own_paths": ({"math_paths": 0.7, "math": 0.15, "math_long": 0.05, "mcq": 0.05, "tooluse": 0.05},
                  {"solve_own": 0.25, "reflect_own": 0.55, "reflect_wrong": 0.05, "reflect_correct": 0.05,
                   "teach": 0.10},
                  ["reflection", "reflection", "solution", "both"]),
    # θ0 continued (``--init-from``) on diagnosing its own sampled wrong answers ("reflect_own"),
    # which are not like the corrupted solutions: mostly an arithmetic slip, often garbled, and
    # against a sibling that is only right in its final answer. "solve_own" replays its own answers,
    # right and wrong, to the student prompt: without it the reflection targets (which spell the
    # corrected line) teach arithmetic too and lift accuracy past the band RL needs (theta0/README.md).
    "own_answers": ({"math": 0.85, "math_long": 0.05, "mcq": 0.05, "tooluse": 0.05},
                    {"solve_own": 0.25, "reflect_own": 0.55, "reflect_wrong": 0.05, "reflect_correct": 0.05,
                     "teach": 0.10},
                    ["reflection", "reflection", "solution", "both"]),
}
OWN_ROLES = {"solve_own", "reflect_own"}  # roles that read the init model's own answers (OwnAnswers)

# The learning rate's factor after warm-up, at a step of a run of ``steps``.
LR_SCHEDULES = {"constant": lambda step, steps: 1.0, "linear": lambda step, steps: max(0.0, 1 - step / steps)}
MAX_LENGTH = 1024  # tokens; longer examples are dropped
POOL_BATCHES = 16  # examples are sorted by length within a pool of this many batches (less padding)


def reads_own_answers(mix: str) -> bool:
    """Whether ``mix`` has a role in OWN_ROLES (it needs ``init_from`` and samples its answers first)."""
    return bool(OWN_ROLES & set(MIXES[mix][1]))


def diagnosis(task: dict, wrong: str, sibling: str) -> tuple[list[dict], str]:
    """The reflector's prompt on a wrong answer against a correct sibling, and the perfect reply:
    the true first wrong line quoted, and its fix explained."""
    messages = reflection_messages(task, wrong, correct=False, sibling=sibling)
    return messages, (
        f"<error_quote>\n{first_wrong_line(task, wrong)}\n</error_quote>\n"
        f"<explanation>\n{explain_error(task, wrong)}\n</explanation>"
    )


def _written(task: dict, rng: random.Random) -> str:
    """The task's solution along one of the paths θ0 is taught (``taught_path``)."""
    return path_solution(task, taught_path(task, rng))


def example(task: dict, role: str, rng: random.Random, contexts: list[str]) -> tuple[list[dict], str]:
    """(chat messages, target text) of one supervised example for ``role``; a teacher example reads
    one of ``contexts``. Solutions take one of the taught paths at random: a solver (and a teacher
    that reads only a reflection) writes each, a teacher that reads a solution copies its path."""
    if role == "solve":
        return student_messages(task), _written(task, rng)
    if role == "reflect_wrong":
        return diagnosis(task, corrupt(task, rng)[0], _written(task, rng))
    if role == "reflect_correct":
        messages = reflection_messages(task, task["solution"], correct=True, sibling=None)
        return messages, f"<explanation>\n{explain_correct(task)}\n</explanation>"
    # The teacher reads a reflection on a wrong rollout (mostly) or a correct one, or a sibling
    # solution when no reflection parsed (docs/method.md, "Teacher prompt"), sometimes both (the ablation's prompt).
    reflection = explain_error(task, corrupt(task, rng)[0]) if rng.random() < 0.7 else explain_correct(task)
    context = rng.choice(contexts)
    shown = _written(task, rng)
    messages = teacher_messages(
        task,
        solution=shown if context != "reflection" else None,
        reflection=reflection if context != "solution" else None,
    )
    return messages, shown if context != "reflection" else _written(task, rng)


def _draw(rng: random.Random, weights: dict) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


class OwnAnswers(NamedTuple):
    """A model's own answers, for the roles in OWN_ROLES."""

    answers: list[tuple]  # (task, answer): every answer sampled, right or wrong ("solve_own")
    wrong: list[tuple]  # (task, wrong answer, correct sibling) whose first wrong line can be quoted ("reflect_own")


def _examples(rng: random.Random, mix: str, own: OwnAnswers | None = None):
    """Endless examples of ``mix``; the roles in OWN_ROLES read ``own``."""
    families, roles, contexts = MIXES[mix]
    while True:
        task = sample(_draw(rng, families), "train", rng)  # drawn for every role: one stream for every mix
        role = _draw(rng, roles)
        if role == "reflect_own":
            yield diagnosis(*rng.choice(own.wrong))
        elif role == "solve_own":
            own_task, answer = rng.choice(own.answers)
            yield student_messages(own_task), answer
        else:
            yield example(task, role, rng, contexts)


def own_answer_pool(engine, n_tasks: int, seed: int, family: str = "math") -> OwnAnswers:
    """A model's own answers to ``n_tasks`` train tasks of ``family``, 4 each at the default config's
    rollout temperature, 1.0; the wrong ones kept are those beside a right one whose first wrong
    line can be quoted (``quotable_first_wrong_line``)."""
    tasks = generate(family, "train", n_tasks, seed)
    groups = own_answers(engine, tasks, samples=4, seed=seed, temperature=1.0, top_p=1.0, max_new_tokens=192)
    wrong, _ = own_wrong_answers(tasks, groups)
    return OwnAnswers(
        answers=[(task, answer) for task, group in zip(tasks, groups) for answer in group],
        wrong=[(task, answer, sibling) for task, answer, sibling in wrong
               if quotable_first_wrong_line(task, answer) is not None],
    )


def tokenizer_corpus(seed: int, n: int = 3000):
    """The world's text: every role's rendered messages and targets, with the chat roles' names."""
    rng = random.Random(seed)
    examples = _examples(rng, "scratch")
    for messages, target in (next(examples) for _ in range(n)):
        yield "\n".join(f"{m['role']}\n{m['content']}" for m in messages) + "\nassistant\n" + target


def _encode(tokenizer, messages, target) -> tuple[list[int], int]:
    """Prompt + target + end-of-turn ids, and where the target starts (loss falls only after it)."""
    prompt = chat_prompt_ids(tokenizer, messages)
    reply = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt + reply, len(prompt)


def _batches(tokenizer, rng: random.Random, batch_size: int, mix: str, own: OwnAnswers | None = None):
    """Padded (input_ids, attention_mask, labels) batches of similar lengths, in random order."""
    examples = _examples(rng, mix, own)
    while True:
        pool = []
        while len(pool) < POOL_BATCHES * batch_size:
            ids, start = _encode(tokenizer, *next(examples))
            if len(ids) <= MAX_LENGTH:
                pool.append((ids, start))
        pool.sort(key=lambda item: len(item[0]))
        chunks = [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            width = max(len(ids) for ids, _ in chunk)
            input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
            labels = torch.full((len(chunk), width), -100)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (ids, start) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                labels[row, start : len(ids)] = torch.tensor(ids[start:])
                mask[row, : len(ids)] = 1
            yield input_ids, mask, labels


def _save(model, tokenizer, out_dir: str, record: dict) -> None:
    """Model and tokenizer (a LoRA adapter alone) and how they were made, written atomically
    (readers never see half a model)."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        if not hasattr(model, "peft_config"):
            tokenizer.save_pretrained(tmp)
        (tmp / "warm_start.json").write_text(json.dumps(record, indent=2))


def _start(settings: dict):
    """(tokenizer, trainable model): a new world model, or the one in ``init_from`` (LoRA over it
    when ``lora_r``)."""
    if not settings["init_from"]:
        tokenizer = train_tokenizer(tokenizer_corpus(settings["seed"]), settings["vocab_size"])
        return tokenizer, build_model(tokenizer, layers=settings["layers"], hidden=settings["hidden"], seed=settings["seed"])
    tokenizer, model = load_tokenizer(settings["init_from"]), load_model(settings["init_from"])
    if settings["lora_r"]:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(settings["seed"])
        lora = LoraConfig(r=settings["lora_r"], lora_alpha=2 * settings["lora_r"], lora_dropout=0.0,
                          target_modules=settings["lora_modules"].split(","))
        model = get_peft_model(model, lora)
    return tokenizer, model


def run_warm_start(
    out_dir: str,
    *,
    seed: int = 0,
    steps: int = 4500,
    batch_size: int = 8,
    lr: float = 1e-3,
    layers: int = 4,
    hidden: int = 128,
    vocab_size: int = 1024,
    log_every: int = 50,
    warmup: int = 100,
    lr_schedule: str = "constant",
    threads: int = 1,
    device: str = "cpu",
    snapshot_every: int = 0,
    mix: str = "scratch",
    init_from: str = "",
    lora_r: int = 0,
    lora_modules: str = "q_proj,v_proj",
    own_tasks: int = 6000,
    own_family: str = "math",
) -> dict:
    """Train θ0 from scratch on the supervised ``mix`` and save model + tokenizer to ``out_dir``;
    returns training metrics. With ``init_from``, train that model instead (its tokenizer and size;
    ``layers``, ``hidden`` and ``vocab_size`` unused), and with ``lora_r`` only a LoRA adapter over
    ``lora_modules``, which is what ``out_dir`` then holds. A mix with a role in OWN_ROLES
    first samples ``init_from``'s own answers to ``own_tasks`` train tasks of ``own_family``
    (``own_answer_pool``).

    AdamW with linear warm-up then a constant ``lr`` (``lr_schedule="linear"``: then decaying
    linearly to 0 at ``steps``); loss only on target tokens. The constant schedule does not depend
    on ``steps``, so the snapshot that ``snapshot_every`` saves at step k (to ``{out_dir}-step{k}``)
    is the model a run with ``steps=k`` makes: that is how the step count of the shipped θ0's first
    stage was chosen (arithmetic is learned suddenly, so accuracy depends steeply on it).
    """
    settings = {k: v for k, v in locals().items() if k != "out_dir"}
    if mix not in MIXES:
        raise ValueError(f"unknown mix {mix!r}; mixes: {', '.join(MIXES)}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}; schedules: {', '.join(LR_SCHEDULES)}")
    if reads_own_answers(mix) and not init_from:
        raise ValueError(f"mix {mix!r} diagnoses a model's own answers: give the model as init_from")
    # One thread: on a busy two-core machine, two OpenMP threads spin against other jobs and run
    # several times slower than one; it also keeps the run bit-reproducible whatever the core count.
    # The caller's thread count comes back afterwards (the tests call this in their own process).
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(out_dir, settings)
    finally:
        torch.set_num_threads(previous_threads)


def _train(out_dir: str, settings: dict) -> dict:
    """run_warm_start's training loop and saves, on the thread count it set."""
    steps, log_every, snapshot_every, device = (settings[k] for k in ("steps", "log_every", "snapshot_every", "device"))
    started = time.time()
    rng = random.Random(settings["seed"])
    tokenizer, model = _start(settings)
    own = None
    if reads_own_answers(settings["mix"]):
        from rosd.engines.hf import HFEngine

        own = own_answer_pool(HFEngine(settings["init_from"]), settings["own_tasks"], settings["seed"], settings["own_family"])
        if not own.wrong:
            raise ValueError(f"{settings['init_from']} answered no {settings['own_family']} task both right and wrong in 4 tries: "
                             f"mix {settings['mix']!r} has nothing to diagnose")
        log.info("warm start: %d own answers of %s, %d wrong ones to diagnose", len(own.answers),
                 settings["init_from"], len(own.wrong))
    model = model.to(device).train()
    log.info("warm start: %d parameters, vocab %d, %s", model.num_parameters(), len(tokenizer), settings)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings["lr"], weight_decay=0.01, betas=(0.9, 0.95))
    decay = LR_SCHEDULES[settings["lr_schedule"]]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / settings["warmup"]) * decay(step, steps))
    batches = _batches(tokenizer, rng, settings["batch_size"], settings["mix"], own)
    tokens, window_loss, window_start, recent_loss = 0, 0.0, time.time(), float("nan")
    for step in range(1, steps + 1):
        input_ids, mask, labels = (t.to(device) for t in next(batches))
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        tokens += int(mask.sum())
        window_loss += loss.item()
        if step % log_every == 0 or step == steps:
            elapsed = time.time() - started
            recent_loss = window_loss / (step % log_every or log_every)
            log.info(
                "step %d/%d loss %.4f lr %.2e tokens/s %.0f ETA %.0fs",
                step, steps, recent_loss, scheduler.get_last_lr()[0],
                tokens / (time.time() - window_start), elapsed / step * (steps - step),
            )
            tokens, window_loss, window_start = 0, 0.0, time.time()
        if snapshot_every and step % snapshot_every == 0 and step < steps:
            _save(model, tokenizer, f"{out_dir}-step{step}", {"settings": {**settings, "steps": step}})
    metrics = {"steps": steps, "final_loss": recent_loss, "seconds": round(time.time() - started, 1)}
    _save(model.cpu().eval(), tokenizer, out_dir, {"settings": settings, "metrics": metrics})
    log.info("warm start done: %s -> %s", metrics, out_dir)
    return metrics


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    defaults = {k: v.default for k, v in inspect.signature(run_warm_start).parameters.items()
                if k != "out_dir"}
    for name, default in defaults.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    parser.add_argument("--evaluate", action="store_true", help="measure θ0 and write evaluation.json + README.md")
    parser.add_argument("--eval-n", type=int, default=200)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_warm_start(args.out_dir, **{name: getattr(args, name) for name in defaults})
    except ValueError as error:  # a bad mix or model: one line, not a traceback
        parser.error(str(error))
    if args.evaluate:
        results = evaluate(args.out_dir, n=args.eval_n, device=args.device)
        log.info("evaluation: %s", results)
        command = "python -m rosd.world.warm_start " + " ".join(argv if argv is not None else sys.argv[1:])
        write_report(args.out_dir, results, n=args.eval_n, command=command)


if __name__ == "__main__":
    main()
