"""The embedded world's tasks (docs/method.md, "Embedded world"): generated problems with verifiable
answers and known steps.

Each task is a plain dict (id, domain, kind, system, prompt, answer, solution, steps, after). The
solution is exactly what a perfect model answers on the canonical path, one step per line, and
``after`` says which steps each step needs first, so the world knows every valid path and where a
wrong response first leaves them (``rosd.world.paths``). Four families mirror the real benchmarks' formats:

- ``math``: short chains of single-digit additions/subtractions, answer in ``\\boxed{}``;
- ``math_paths``: three bracketed parts combined, six lines, the parts in any order (the train
  target: several valid paths per problem, ``rosd.world.paths``);
- ``math_long``: the same format with longer chains (out-of-domain);
- ``mcq``: the same arithmetic as SciKnowEval-style multiple choice, ``<reasoning>`` then ``<answer>``;
- ``tooluse``: ToolAlpaca-style ReAct calls, ``Action:`` / ``Action Input:``.
"""

from __future__ import annotations

import json
import random
import re
import zlib

from rosd.evaluation.grading import score
from rosd.world.paths import chain, first_error_offset, intended_step

FAMILIES = {"math": "math", "math_paths": "math", "math_long": "math", "mcq": "mcq", "tooluse": "tooluse"}  # family -> grading kind

# Difficulty: operations per chain, and the range every running total stays in. Single-digit operands
# and small totals keep the arithmetic learnable by a ~1M-parameter model within minutes of CPU (a
# prototype with operands up to 99 stayed at ~1%). θ0 was trained on these values: changing them
# changes what it can do (see theta0/README.md).
CHAIN_OPS = {"math": (2, 3), "math_long": (5, 7), "mcq": (1, 2)}
MAX_TOTAL = 19
# math_paths: three parts "(a op b)" joined by + or -: the parts may be computed in any order, and
# each join as soon as its two operands are (8 valid paths, the boxed line last).
PARTS_AFTER = [[], [], [], [0, 1], [3, 2], [4]]
# The paths θ0 is taught to write (the oracle accepts all 8): the parts left to right then the joins,
# right to left then the joins, or left to right joining the first two as soon as they are done. Two
# choice points (the first line, and the third after a left-to-right start) a small model can learn,
# where drawing among all 8 taught it to repeat a part.
TAUGHT_PATHS = {"math_paths": [(0, 1, 2, 3, 4, 5), (2, 1, 0, 3, 4, 5), (0, 1, 3, 2, 4, 5)]}

# One problem in five belongs to the test split, chosen by a stable hash of the problem itself (not
# its options or tool list): the splits are disjoint for every seed and size.
TEST_ONE_IN = 5

MCQ_SYSTEM = (
    "\nGiven a question and {count} options, please select the right answer. Respond in the following format:\n"
    "<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n\n"
    "For the answer, only output the letter corresponding to the correct option ({letters}), and nothing else. "
    'Do not restate the answer text. For example, if the answer is "A", just output:\n<answer>\nA\n</answer>\n'
)
MCQ_COUNT_WORDS = {2: "two", 4: "four"}
MCQ_LETTER_LISTS = {2: "A or B", 4: "A, B, C, or D"}

# name -> (description, {function: (description, {parameter: description})})
APIS = {
    "Calculator": ("Basic arithmetic on integers.", {
        "add": ("Add two integers.", {"a": "integer. The first number.", "b": "integer. The second number."}),
        "subtract": ("Subtract b from a.", {"a": "integer. The first number.", "b": "integer. The number to subtract."}),
    }),
    "Weather": ("Weather forecasts for cities.", {
        "getForecast": ("Get the forecast for a city.", {"city": "string. The city.", "days": "integer. Days ahead."}),
    }),
    "Translator": ("Translate short phrases.", {
        "translate": ("Translate a phrase.", {"text": "string. The phrase.", "language": "string. The target language."}),
    }),
    "WorldClock": ("Local times around the world.", {
        "getTime": ("Get the local time in a city.", {"place": "string. The city."}),
    }),
}
QUESTIONS = {
    "add": "What is {a} plus {b}?",
    "subtract": "What is {a} minus {b}?",
    "getForecast": "What will the weather be in {city} over the next {days} days?",
    "translate": 'How do you say "{text}" in {language}?',
    "getTime": "What time is it in {place}?",
}
CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Denver", "Madrid", "Seoul", "Nairobi", "Perth"]
VALUES = {
    "a": lambda rng: rng.randint(1, 99),
    "b": lambda rng: rng.randint(1, 99),
    "days": lambda rng: rng.randint(1, 7),
    "city": lambda rng: rng.choice(CITIES),
    "place": lambda rng: rng.choice(CITIES),
    "text": lambda rng: rng.choice(["good morning", "thank you", "where is the station", "see you soon", "how much"]),
    "language": lambda rng: rng.choice(["French", "Spanish", "German", "Italian", "Japanese"]),
}
TOOL_HEADER = (
    "Your task is to answer the user's question using available tools. \n"
    "You have access to the following tools:\n"
)
TOOL_FOOTER = (
    "\nUse the following format:\n"
    "Thought: you should always think about what to do\n"
    "Action: the action to take, should be one of the tool names.\n"
    "Action Input: the input to the action, must be in JSON format. "
    "All of the action input must be realistic and from the user.\n\n"
    "Begin!\nQuestion: "
)


# --- arithmetic chains (math, math_long, mcq) ---

def _chain(rng: random.Random, n_ops: int) -> tuple[list[int], list[str]]:
    """Operands and operators of a chain whose running total stays within 0..MAX_TOTAL."""
    total = rng.randint(1, 9)
    operands, ops = [total], []
    while len(ops) < n_ops:
        op, x = rng.choice("+-"), rng.randint(1, 9)
        new = total + x if op == "+" else total - x
        if 0 <= new <= MAX_TOTAL:
            operands.append(x)
            ops.append(op)
            total = new
    return operands, ops


def _expression(operands, ops) -> str:
    return " ".join([str(operands[0])] + [f"{op} {x}" for op, x in zip(ops, operands[1:])])


def _parse_expression(prompt: str) -> tuple[list[int], list[str]]:
    """The chain back from a math or mcq prompt, so a task record alone is enough to corrupt it."""
    words = re.search(r"(?:Compute|equals) ([\d +-]+?)[.?]", prompt).group(1).split()
    return [int(w) for w in words[::2]], words[1::2]


def _chain_lines(operands, ops, error=None) -> tuple[list[str], int]:
    """One line "t op x = t'" per operation, and the final total.

    ``error = (step, operand_delta, result_delta)`` misreads the operand and/or slips the result at
    that step; later steps carry the wrong total on, as a real mistake would.
    """
    total, lines = operands[0], []
    for step, (op, x) in enumerate(zip(ops, operands[1:])):
        d_operand, d_result = (error[1], error[2]) if error and error[0] == step else (0, 0)
        x += d_operand
        new = (total + x if op == "+" else total - x) + d_result
        lines.append(f"{total} {op} {x} = {new}")
        total = new
    return lines, total


def _math(rng, family):
    operands, ops = _chain(rng, rng.randint(*CHAIN_OPS[family]))
    lines, total = _chain_lines(operands, ops)
    task = {"system": None, "prompt": f"Compute {_expression(operands, ops)}.", "answer": str(total)}
    return task, lines + [_boxed_line(total)], _expression(operands, ops)


def _parts_lines(parts, joins, order, error=None) -> list[str]:
    """math_paths' lines in ``order`` (step ids of PARTS_AFTER). ``error = (step, operand_delta,
    result_delta)`` misreads a part's second operand and/or slips a result (or the boxed copy) at that
    step; the steps that use it carry the wrong value on."""
    values, lines = {}, {}
    for step in order:
        d_operand, d_result = (error[1], error[2]) if error and error[0] == step else (0, 0)
        if step == 5:
            values[5] = values[4] + d_result
            lines[5] = _boxed_line(values[5])
            continue
        if step < 3:
            a, op, b = parts[step][0], parts[step][1], parts[step][2] + d_operand
        else:
            left, right = PARTS_AFTER[step]
            a, op, b = values[left], joins[step - 3], values[right]
        values[step] = (a + b if op == "+" else a - b) + d_result
        lines[step] = f"{a} {op} {b} = {values[step]}"
    return [lines[step] for step in order]


def _parts_expression(parts, joins) -> str:
    first, second, third = (f"({a} {op} {b})" for a, op, b in parts)
    return f"{first} {joins[0]} {second} {joins[1]} {third}"


def _parse_parts(prompt: str):
    """The parts and joins back from a math_paths prompt."""
    found = re.search(r"\((\d+) ([+-]) (\d+)\) ([+-]) \((\d+) ([+-]) (\d+)\) ([+-]) \((\d+) ([+-]) (\d+)\)", prompt).groups()
    parts = [(int(found[i]), found[i + 1], int(found[i + 2])) for i in (0, 4, 8)]
    return parts, [found[3], found[7]]


def _math_paths(rng, family):
    while True:
        parts = [(operands[0], ops[0], operands[1]) for operands, ops in (_chain(rng, 1) for _ in range(3))]
        joins = [rng.choice("+-"), rng.choice("+-")]
        lines = _parts_lines(parts, joins, range(6))
        totals = [int(line.rsplit("= ", 1)[1]) for line in lines[3:5]]
        # running totals in the chains' range, and no two steps alike (a path is then told by its text)
        if all(0 <= t <= MAX_TOTAL for t in totals) and len(set(lines)) == len(lines):
            break
    expression = _parts_expression(parts, joins)
    task = {"system": None, "prompt": f"Compute {expression}.", "answer": str(totals[1]), "after": PARTS_AFTER}
    return task, lines, expression


def _mcq(rng, family):
    operands, ops = _chain(rng, rng.randint(*CHAIN_OPS[family]))
    lines, total = _chain_lines(operands, ops)
    count = rng.choice([2, 4])
    others = [v for v in range(total - 3, total + 4) if v >= 0 and v != total]
    values = rng.sample(others, count - 1) + [total]
    rng.shuffle(values)
    letters = "ABCD"[:count]
    options = "\n".join(f"{letter}: {value}" for letter, value in zip(letters, values))
    letter = letters[values.index(total)]
    task = {
        "system": MCQ_SYSTEM.format(count=MCQ_COUNT_WORDS[count], letters=MCQ_LETTER_LISTS[count]),
        "prompt": f"Which option equals {_expression(operands, ops)}?\n\n{options}\nPlease reason step by step.",
        "answer": letter,
    }
    return task, _mcq_lines(lines, total, letter), _expression(operands, ops)


def _boxed_line(total) -> str:
    return f"The answer is \\boxed{{{total}}}."


def _mcq_lines(chain_lines, value, letter):
    return ["<reasoning>", *chain_lines, f"The value {value} is option {letter}.", "</reasoning>", "<answer>", letter, "</answer>"]


# --- tool use ---

def _tool_doc(api: str) -> str:
    description, functions = APIS[api]
    docs = "".join(
        f"{name}: {what}\nParameters: {json.dumps(params)}\n"
        for name, (what, params) in functions.items()
    )
    return f"Name: {api}\nDescription: {description}\nDocumentation:\n{docs}"


def _api_of(function: str) -> str:
    return next(api for api, (_, functions) in APIS.items() if function in functions)


def _params(function: str) -> dict:
    return APIS[_api_of(function)][1][function][1]


def _call_lines(function, inputs, thought_function=None):
    return [f"Thought: I need to call {thought_function or function}.", f"Action: {function}", f"Action Input: {json.dumps(inputs)}"]


def _tooluse(rng, family):
    functions = [rng.choice(list(QUESTIONS))]
    if rng.random() < 0.3:
        # A second call never shares a parameter name with the first: merged inputs must identify both.
        functions.append(rng.choice([f for f in QUESTIONS if not set(_params(f)) & set(_params(functions[0]))]))
    calls = [(f, {p: VALUES[p](rng) for p in _params(f)}) for f in functions]
    apis = list(dict.fromkeys(_api_of(f) for f in functions))
    apis.append(rng.choice([api for api in APIS if api not in apis]))  # a tool the question does not need
    rng.shuffle(apis)
    questions = [QUESTIONS[f].format(**inputs) for f, inputs in calls]
    question = questions[0] + ("" if len(questions) == 1 else " Also, " + questions[1][0].lower() + questions[1][1:])
    task = {
        "system": None,
        "prompt": TOOL_HEADER + "".join(_tool_doc(api) for api in apis) + TOOL_FOOTER + question,
        "answer": json.dumps([{"Action": f, "Action_Input": json.dumps(inputs)} for f, inputs in calls]),
    }
    return task, [line for f, inputs in calls for line in _call_lines(f, inputs)], question


MAKERS = {"math": _math, "math_paths": _math_paths, "math_long": _math, "mcq": _mcq, "tooluse": _tooluse}


# --- public API ---

def split_of(problem: str) -> str:
    """The split of a problem (an arithmetic expression, a tool-use question), whatever its wording."""
    return "test" if zlib.crc32(problem.encode()) % TEST_ONE_IN == 0 else "train"


def sample(family: str, split: str, rng: random.Random) -> dict:
    """One random task of ``family`` from ``split`` (tasks may repeat across calls)."""
    while True:
        fields, steps, problem = MAKERS[family](rng, family)
        if split_of(problem) == split:
            break
    task_id = f"{family}-{zlib.crc32(fields['prompt'].encode()):08x}"
    after = fields.pop("after", None) or chain(len(steps))
    return {"id": task_id, "domain": family, "kind": FAMILIES[family], **fields,
            "solution": "\n".join(steps), "steps": steps, "after": after}


def generate(family: str, split: str, n: int, seed: int) -> list[dict]:
    """``n`` distinct tasks of ``family`` from ``split`` ("train" or "test"), the same for the same seed."""
    if family not in MAKERS or split not in ("train", "test"):
        raise ValueError(f"unknown family {family!r} or split {split!r}; families: {', '.join(MAKERS)}")
    rng = random.Random(f"{family}/{split}/{seed}")
    tasks: dict[str, dict] = {}
    for _ in range(100 * n):
        if len(tasks) == n:
            break
        task = sample(family, split, rng)
        tasks.setdefault(task["prompt"], task)
    if len(tasks) < n:
        raise ValueError(f"{family}/{split} has fewer than {n} distinct tasks")
    return list(tasks.values())


# --- the true first error, wrong solutions and explanations ---

def first_wrong_line(task: dict, response: str) -> str | None:
    """The stripped text of the response's first deviating line (what a reflector should quote)."""
    offset = first_error_offset(task, response)
    return None if offset is None else response[offset:].split("\n", 1)[0].strip()


def quotable_first_wrong_line(task: dict, response: str) -> str | None:
    """The first wrong line when quoting it points at the error (the line does not also occur
    earlier in the response, where ``str.find`` would place the quote), else None."""
    line = first_wrong_line(task, response)
    return line if line is not None and response.find(line) == first_error_offset(task, response) else None


def _wrong_math(task, rng):
    operands, ops = _parse_expression(task["prompt"])
    step = rng.randrange(len(ops) + 1)
    if step == len(ops):  # every step right, the final total copied wrongly
        lines, total = _chain_lines(operands, ops)
        return lines + [_boxed_line(total + rng.choice([-2, -1, 1, 2]))]
    d_operand = rng.choice([d for d in (-1, 0, 0, 1) if 1 <= operands[step + 1] + d <= 9])
    lines, total = _chain_lines(operands, ops, (step, d_operand, rng.choice([-2, -1, 0, 1, 2])))
    return lines + [_boxed_line(total)]


def _wrong_mcq(task, rng):
    operands, ops = _parse_expression(task["prompt"])
    options = dict(re.findall(r"^([A-D]): (\d+)$", task["prompt"], re.MULTILINE))
    lines, total = _chain_lines(operands, ops)
    letter = rng.choice([letter for letter in options if letter != task["answer"]])
    step = rng.randrange(len(ops) + 1)
    if step == len(ops):  # right value, wrong option picked
        return _mcq_lines(lines, total, letter)
    # For + and - chains a slip of d at any step moves the final value by d: aim it at a distractor.
    lines, total = _chain_lines(operands, ops, (step, 0, int(options[letter]) - total))
    return _mcq_lines(lines, total, letter)


def _wrong_tooluse(task, rng):
    calls = [(call["Action"], json.loads(call["Action_Input"])) for call in json.loads(task["answer"])]
    listed = [f for api in re.findall(r"^Name: (\w+)$", task["prompt"], re.MULTILINE) for f in APIS[api][1]]
    index, where = rng.randrange(len(calls)), rng.choice(["thought", "action", "input"])
    function, inputs = calls[index]
    other = rng.choice([f for f in listed if f != function])
    if where == "thought":
        wrong = _call_lines(other, inputs)
    elif where == "action":
        wrong = _call_lines(other, inputs, thought_function=function)
    else:
        name = rng.choice(list(inputs))
        value = inputs[name]
        while value == inputs[name]:
            value = max(1, value + rng.randint(-5, 5)) if isinstance(value, int) else VALUES[name](rng)
        wrong = _call_lines(function, {**inputs, name: value})
    return [line for i, (f, x) in enumerate(calls) for line in (wrong if i == index else _call_lines(f, x))]


def taught_path(task: dict, rng: random.Random) -> tuple[int, ...]:
    """A path θ0 is taught to write: one of its family's TAUGHT_PATHS, a chain's one path (drawing
    nothing from ``rng``)."""
    paths = TAUGHT_PATHS.get(task["domain"])
    return rng.choice(paths) if paths else tuple(range(len(task["steps"])))


def _wrong_paths(task, rng):
    parts, joins = _parse_parts(task["prompt"])
    order = taught_path(task, rng)
    step = rng.randrange(6)
    if step == 5:  # every step right, the final total copied wrongly
        return _parts_lines(parts, joins, order, (5, 0, rng.choice([-2, -1, 1, 2])))
    d_operand = rng.choice([d for d in (-1, 0, 0, 1) if step < 3 and 1 <= parts[step][2] + d <= 9] or [0])
    return _parts_lines(parts, joins, order, (step, d_operand, rng.choice([-2, -1, 0, 1, 2])))


WRONG = {"math": _wrong_math, "math_paths": _wrong_paths, "math_long": _wrong_math, "mcq": _wrong_mcq, "tooluse": _wrong_tooluse}


def corrupt(task: dict, rng: random.Random) -> tuple[str, str]:
    """A plausible wrong solution (an error at a random step, carried on) and its first wrong line."""
    while True:
        text = "\n".join(WRONG[task["domain"]](task, rng))
        line = quotable_first_wrong_line(task, text)
        # Keep only wrong answers (a misread operand and an opposite slip can cancel out), with no
        # negative numbers (the world's solutions have none), whose first wrong line can be quoted.
        if score(task["kind"], text, task["answer"]) == 0.0 and not re.search(r"-\d", text) and line is not None:
            return text, line


EXPLAIN_TAIL = {"math": "Fixing it gives the answer {answer}.", "mcq": "Fixing it gives option {answer}.",
                "tooluse": "Fixing it gives the right call."}
EXPLAIN_CORRECT = {"math": "Each step is computed correctly, so the answer {answer} is right.",
                   "mcq": "Each step is computed correctly, so option {answer} is right.",
                   "tooluse": "Each call uses the right tool with the inputs from the question."}


def explain_error(task: dict, wrong_solution: str) -> str:
    """What a perfect reflector explains about a wrong solution: its first wrong line and the fix."""
    offset = first_error_offset(task, wrong_solution)
    tail = EXPLAIN_TAIL[task["kind"]].format(answer=task["answer"])
    if offset is None:
        return "The solution stops before the end. " + tail
    wrong, step = first_wrong_line(task, wrong_solution), intended_step(task, wrong_solution)
    if step is None:
        return f'The line "{wrong}" should not be there. ' + tail
    return f'The line "{wrong}" is wrong; it should be "{task["steps"][step]}". ' + tail


def explain_correct(task: dict) -> str:
    """What a perfect reflector explains about a correct solution."""
    return EXPLAIN_CORRECT[task["kind"]].format(answer=task["answer"])
