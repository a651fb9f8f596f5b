"""Measuring a world model (θ0 or a checkpoint): accuracy per task family, and how well it reflects
(the tag format, quoting the true first wrong line) and teaches from a solution and a reflection."""

from __future__ import annotations

import json
import os
import random

from rosd.evaluation.grading import score
from rosd.method.groups import teacher_context
from rosd.method.prompts import (
    chat_prompt_ids,
    reflection_messages,
    student_messages,
    teacher_messages,
)
from rosd.method.reflection import find_quote, parse_reflection
from rosd.method.statistics import path_stats
from rosd.world.first_error import true_error_hit
from rosd.world.paths import valid_path
from rosd.world.tasks import FAMILIES, corrupt, generate


def _engine(model_dir: str, device: str = "cpu"):
    from rosd.engines.hf import HFEngine

    return HFEngine(model_dir, device=device)


def _sample_texts(engine, messages: list[list[dict]], *, temperature: float, seed: int, n: int = 1,
                  top_p: float = 0.95, max_new_tokens: int = 192) -> list[str] | list[list[str]]:
    """One text per prompt, or ``n`` > 1 texts per prompt."""
    prompts = [chat_prompt_ids(engine.tokenizer, m) for m in messages]
    samples = engine.generate(prompts, n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    return [per_prompt[0].text if n == 1 else [s.text for s in per_prompt] for per_prompt in samples]


def _on_first_error(task: dict, response: str, quote: str | None) -> bool:
    """The quote is found in the response and starts on the line of its true first error (as the
    pipeline's ``first_error_hit``)."""
    return bool(true_error_hit({"reward": 0.0, "task": task, "response": response, "quote_char": find_quote(response, quote)}))


def evaluate_accuracy(model_dir: str, family: str, n: int = 200, seed: int = 1, temperature: float = 0.6,
                      engine=None) -> float:
    """Share of ``n`` test tasks of ``family`` answered correctly, one sample each."""
    engine = engine or _engine(model_dir)
    tasks = generate(family, "test", n, seed)
    texts = _sample_texts(engine, [student_messages(t) for t in tasks], temperature=temperature, seed=seed)
    return sum(score(t["kind"], text, t["answer"]) for t, text in zip(tasks, texts)) / n


def evaluate_reflection(model_dir: str, family: str = "math", n: int = 200, seed: int = 1,
                        temperature: float = 0.6, engine=None) -> dict:
    """How θ0 reflects on corrupted test solutions, and how it teaches from solution + reflection.

    parse_rate: an explanation parses; quote_exact_rate: the quote is exactly the true first wrong
    line; quote_on_first_error_rate: the quote is found where the first error starts;
    teacher_accuracy: the teacher prompt (as rosd builds it: the reflection when it parsed, else the
    sibling solution) yields a correct answer.
    """
    engine = engine or _engine(model_dir)
    rng = random.Random(seed)
    tasks = generate(family, "test", n, seed)
    wrongs = [corrupt(t, rng) for t in tasks]
    texts = _sample_texts(
        engine,
        [reflection_messages(t, wrong, correct=False, sibling=t["solution"]) for t, (wrong, _) in zip(tasks, wrongs)],
        temperature=temperature, seed=seed,
    )
    reflections = [parse_reflection(text) for text in texts]
    # The reflection prompt after a wrong rollout reads its sibling: here the task's solution.
    contexts = [teacher_context({"task": t, "sibling": t["solution"], "explanation": r.explanation}, "reflection_else_solution")
                for t, r in zip(tasks, reflections)]
    teacher = [teacher_messages(t, solution=solution, reflection=reflection) for t, (solution, reflection) in zip(tasks, contexts)]
    answers = _sample_texts(engine, teacher, temperature=temperature, seed=seed)
    return {
        "parse_rate": sum(r.parsed for r in reflections) / n,
        "quote_exact_rate": sum(r.error_quote == line for r, (_, line) in zip(reflections, wrongs)) / n,
        "quote_on_first_error_rate": sum(
            _on_first_error(t, wrong, r.error_quote) for t, r, (wrong, _) in zip(tasks, reflections, wrongs)
        ) / n,
        "teacher_accuracy": sum(score(t["kind"], a, t["answer"]) for t, a in zip(tasks, answers)) / n,
    }


def own_answers(engine, tasks: list[dict], *, samples: int, seed: int, **sampling) -> list[list[str]]:
    """``samples`` answers per task to the student prompt, as the pipeline's rollouts."""
    return _sample_texts(engine, [student_messages(t) for t in tasks], seed=seed, n=samples, **sampling)


def own_wrong_answers(tasks: list[dict], groups: list[list[str]]) -> tuple[list[tuple], int]:
    """The (task, wrong answer, the group's first correct answer) of every wrong answer in a group
    that also has a correct one, as the pipeline pairs a wrong rollout with its sibling, and how many
    answers were correct."""
    wrong, correct_count = [], 0
    for task, answers in zip(tasks, groups):
        rewards = [score(task["kind"], a, task["answer"]) for a in answers]
        correct = [a for a, reward in zip(answers, rewards) if reward == 1.0]
        correct_count += len(correct)
        wrong += [(task, a, correct[0]) for a, reward in zip(answers, rewards) if correct and reward == 0.0]
    return wrong, correct_count


def reflect_on_own_answers(engine, tasks: list[dict], *, samples: int = 8, temperature: float = 1.0, seed: int = 1,
                           max_new_tokens: int = 192) -> dict:
    """How a model reflects on its own wrong answers, as the pipeline asks it to (docs/method.md, "Reflection"), on any
    tasks (the world's or a real dataset's records).

    ``samples`` answers per task; each wrong answer in a group that also has a correct one is
    reflected on (same temperature, top_p 1.0, as the default config) against the group's first
    correct answer. ``own_accuracy`` is over all answers; the rates over those wrong answers:
    ``own_parse_rate`` (the explanation parses), ``own_quote_found_rate`` and, for world tasks,
    ``own_quote_on_first_error_rate`` (the quote starts on the line of the true first error).
    """
    kw = dict(temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens)
    wrong, correct_count = own_wrong_answers(tasks, own_answers(engine, tasks, samples=samples, seed=seed, **kw))
    texts = _sample_texts(
        engine, [reflection_messages(t, a, correct=False, sibling=sibling) for t, a, sibling in wrong], seed=seed + 1, **kw)
    reflections = [parse_reflection(text) for text in texts]
    count = max(len(wrong), 1)
    world = all(t.get("steps") for t in tasks)
    return {
        "own_accuracy": correct_count / max(samples * len(tasks), 1),
        "own_wrong_rollouts": len(wrong),
        "own_parse_rate": sum(r.parsed for r in reflections) / count,
        "own_quote_found_rate": sum(find_quote(a, r.error_quote) is not None for (_, a, _), r in zip(wrong, reflections)) / count,
        "own_quote_on_first_error_rate": sum(
            _on_first_error(t, a, r.error_quote) for (t, a, _), r in zip(wrong, reflections)) / count if world else None,
    }


def evaluate_own_localization(model_dir: str, family: str = "math", n: int = 200, seed: int = 1, samples: int = 8,
                              temperature: float = 1.0, engine=None) -> dict:
    """``reflect_on_own_answers`` on ``n`` world test tasks of ``family``, at the default config's
    rollout and reflection temperature."""
    tasks = generate(family, "test", n, seed)
    return reflect_on_own_answers(engine or _engine(model_dir), tasks, samples=samples, temperature=temperature, seed=seed)


def evaluate_paths(model_dir: str, family: str = "math_paths", n: int = 200, seed: int = 1, samples: int = 4,
                   temperature: float = 1.0, engine=None) -> dict:
    """Which valid paths a model's own correct answers take: ``samples`` answers per test task at the
    rollout temperature; ``path_entropy`` (nats) of the correct answers' paths, pooled (ln 8 = 2.08
    for math_paths' 8 paths used evenly), ``paths_used`` how many distinct ones, and
    ``reference_path_share`` the share on the canonical (reference solution's) path."""
    tasks = generate(family, "test", n, seed)
    groups = own_answers(engine or _engine(model_dir), tasks, samples=samples, seed=seed, temperature=temperature,
                         top_p=1.0, max_new_tokens=192)
    solved = [{"reward": 1.0, "task": t, "path": path} for t, group in zip(tasks, groups) for a in group
              if score(t["kind"], a, t["answer"]) == 1.0 and (path := valid_path(t, a)) is not None]
    stats = path_stats(solved)
    return {"paths_correct_answers": len(solved), "path_entropy": stats["path_entropy"],
            "paths_used": len({tuple(r["path"]) for r in solved}), "reference_path_share": stats["reference_path_share"]}


def evaluate(model_dir: str, n: int = 200, seed: int = 1, temperature: float = 0.6, device: str = "cpu",
             target: str = "math_paths") -> dict:
    """Accuracy per family, and path, reflection and teacher metrics on the train ``target``."""
    engine = _engine(model_dir, device)
    results = {f"accuracy_{family}": evaluate_accuracy(model_dir, family, n, seed, temperature, engine)
               for family in FAMILIES}
    results.update(evaluate_paths(model_dir, target, n, seed, engine=engine))
    results.update(evaluate_reflection(model_dir, target, n, seed, temperature, engine))
    results.update(evaluate_own_localization(model_dir, target, n, seed, engine=engine))
    return results


README = """# θ0: the embedded world's warm-started model

Trained on CPU (one thread, on a shared two-core machine) by the warm-start rule,
`rosd.world.warm_start.run_warm_start`, with these settings:

    {command}

Settings: {settings}

Training: {seconds:.0f} s wall clock, {steps} steps, final loss {final_loss:.3f}.

Measured on {n} test tasks per family, one sample each at temperature {temperature}, top_p 0.95:

| metric | value |
| --- | --- |
{rows}

`accuracy_*`: the student prompt answered correctly. `path_entropy`, `paths_used` and
`reference_path_share`: the paths of its correct answers (4 per target test task at temperature
1.0). Reflection metrics are on corrupted target-family test solutions: `parse_rate` = the
explanation tag parses, `quote_exact_rate` = the error quote is exactly
the true first wrong line, `quote_on_first_error_rate` = the quote is found where the first error
starts; `teacher_accuracy` = the teacher prompt (the parsed reflection, else the sibling solution) answers
correctly. `own_*`: the same on θ0's own wrong answers (8 per target test task at temperature 1.0,
reflected on at 1.0 against a correct answer of the same group, as the pipeline does).

The model learns arithmetic suddenly (a run's accuracy climbs from ~10% to ~100% over a few
thousand steps, at a step that varies with the seed), so the step count was chosen from snapshots
(`--snapshot-every 250`) of a longer run: with a schedule that does not depend on `steps`, the
snapshot at step k is the model `--steps k` makes, bit for bit on the same software.
"""


def write_report(model_dir: str, results: dict, *, n: int, command: str) -> None:
    """evaluation.json and README.md beside the model, from its warm_start.json and ``results``."""
    with open(os.path.join(model_dir, "warm_start.json")) as f:
        record = json.load(f)
    with open(os.path.join(model_dir, "evaluation.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(model_dir, "README.md"), "w") as f:
        f.write(README.format(
            command=command, settings=json.dumps(record["settings"]), n=n, temperature=0.6, **record["metrics"],
            rows="\n".join(f"| {k} | {v:.3f} |" for k, v in results.items()),
        ))


def main(argv=None) -> None:
    """``python -m rosd.world.measure MODEL TASKS.jsonl``: ``reflect_on_own_answers`` of a model
    on a prepared task file (e.g. a run's data/test/<benchmark>.jsonl), printed as JSON."""
    import argparse

    from rosd.io.files import read_jsonl

    parser = argparse.ArgumentParser(description=main.__doc__.split(":")[0])
    parser.add_argument("model")
    parser.add_argument("tasks")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    results = reflect_on_own_answers(_engine(args.model), read_jsonl(args.tasks), samples=args.samples,
                                     temperature=args.temperature, seed=args.seed, max_new_tokens=args.max_new_tokens)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
