"""Names that become paths or shell words (experiment, methods, targets, benchmarks, data.datasets
keys): a name holding shell syntax, a traversal, an absolute path, a slash, a space or a quote stops
the run with one config-error line naming the key, before any job; and every field of every rule's
shell command is quoted, so that no name, now or later, reaches a shell."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from pipeline_run import REPO, environment, snakemake_command

from rosd.jobs.config import ConfigError, check

DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
NAME_RULE = "must be a name of at most 100 letters, digits, '_', '.' and '-', starting with a letter or digit"
METHOD_RULE = "must be one of 'base', 'rosd', 'rosd_solution_and_reflection', 'rosd_reflection_only', 'rosd_no_mask', 'sdpo', 'opsd', 'grpo'"

# The classes of bad names: what each would do if it reached a path or a shell unchecked.
BAD_NAMES = {
    "command substitution": "$(touch PWNED)",
    "command separator": "a;touch PWNED",
    "backticks": "`touch PWNED`",
    "traversal": "../escape",
    "absolute path": "/tmp/escape",
    "slash": "a/b",
    "space": "a b",
    "single quote": "it's",
    "double quote": 'say "x"',
    "current directory": ".",
    "parent directory": "..",
    "empty": "",
    "longer than a file name allows": "x" * 101,
}

# Each kind of name: the config change that puts ``name`` there, and the key its line names.
KINDS = {
    "experiment": (lambda name: {"experiment": name}, "experiment", NAME_RULE),
    "target": (lambda name: {"targets": [name]}, "targets.0", NAME_RULE),
    "benchmark": (lambda name: {"benchmarks": ["math", name]}, "benchmarks.1", NAME_RULE),
    "data.datasets key": (lambda name: {"data": {"datasets": {name: {"adapter": "aime"}}}}, "data.datasets key", NAME_RULE),
    "method": (lambda name: {"methods": ["base", name]}, "methods.1", METHOD_RULE),
    "method_overrides key": (lambda name: {"method_overrides": {name: {}}}, "method_overrides key", METHOD_RULE),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_a_bad_name_of_each_kind_is_one_config_line_naming_the_key(kind, name):
    change, key, rule = KINDS[kind]
    with pytest.raises(ConfigError) as error:
        check({**DEFAULT, **change(name)})
    assert str(error.value) == f"config error: {key} = {name!r}: {rule}"


@pytest.mark.parametrize("name", ["math", "sciknoweval_biology", "aime24", "gsm8k-main", "v1.2", "Run_3", "x" * 100])
def test_ordinary_names_pass(name):
    check({**DEFAULT, "experiment": name, "targets": [name], "benchmarks": [name], "data": {"datasets": {name: {"adapter": "aime"}}}})


def _shell_commands(text: str) -> list[str]:
    """The text of each `shell:` section of a rules file (the lines indented below it)."""
    sections, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "shell:":
            indent = len(line) - len(line.lstrip())
            body = []
            for following in lines[i + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                body.append(following)
            sections.append("\n".join(body))
    return sections


def test_every_field_of_every_shell_command_is_quoted():
    commands = {path.name: _shell_commands(path.read_text()) for path in sorted((REPO / "workflow" / "rules").glob("*.smk"))}
    assert sum(map(len, commands.values())) >= 12, commands  # every rule's command was found
    for name, sections in commands.items():
        for command in sections:
            fields = re.findall(r"\{+([^{}]+)\}+", command)
            unquoted = [field for field in fields if not field.endswith(":q")]
            assert not unquoted, f"{name}: unquoted fields {unquoted} in\n{command}"
            # An f-string would put a module value (a path under results/<experiment>) in unquoted.
            assert not re.search(r"\bf\"", command), f"{name}: an f-string in a shell command:\n{command}"


# One case per kind of name through Snakemake itself, as a run (not a dry run), so a name the check
# let through would run its command: the file it touches, or anything else, would appear.
RUN_CASES = {
    "experiment traversal": ({"experiment": ".."}, "experiment = '..'"),
    "target command separator": ({"targets": ["a;touch PWNED"]}, "targets.0 = 'a;touch PWNED'"),
    "benchmark command substitution": ({"benchmarks": ["$(touch PWNED)"]}, "benchmarks.0 = '$(touch PWNED)'"),
    "dataset key traversal": ({"data": {"datasets": {"../../escape": {"adapter": "aime"}}}}, "data.datasets key = '../../escape'"),
    "benchmark backticks with a space": ({"benchmarks": ["`touch PWNED` x"]}, "benchmarks.0 = '`touch PWNED` x'"),
}


@pytest.mark.pipeline
@pytest.mark.parametrize("case", RUN_CASES)
def test_snakemake_refuses_a_bad_name_before_any_job(case, tmp_path):
    change, named = RUN_CASES[case]
    workdir = tmp_path / "run"
    workdir.mkdir()
    overlay = tmp_path / "names.yaml"
    overlay.write_text(yaml.safe_dump(change))
    done = subprocess.run(
        snakemake_command(workdir, configs=[overlay]), env=environment(), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("config error:")]
    assert len(errors) == 1 and errors[0].startswith(f"config error: {named}: must be a name"), done.stderr[-2000:]
    # Nothing ran and nothing was written: Snakemake's own .snakemake/ log is all there is.
    assert [p.name for p in workdir.iterdir()] == [".snakemake"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["names.yaml", "run"]
    assert not any((place / "PWNED").exists() for place in (workdir, tmp_path, REPO, Path.cwd()))
