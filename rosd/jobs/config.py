"""Config checking: one line per bad value, naming the key, the value and what is allowed.

Snakemake's own ``validate`` (called in the Snakefile) fills in the schema's defaults; this module
runs first so that a bad value stops the run before any job with a message a person can act on.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jsonschema
import yaml

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    pass


def _allowed(error: jsonschema.ValidationError) -> str:
    schema, kind = error.schema, error.validator
    if kind == "enum":
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    if kind == "type":
        return f"of type {schema['type']}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        return f"a number {sign} {schema[kind]}"
    if kind == "additionalProperties":
        return ", ".join(sorted(schema.get("properties", {})))
    if kind == "pattern":
        return schema.get("pattern_description", f"matching {schema['pattern']}")
    if kind in ("oneOf", "anyOf"):
        # The branch of the right type says what is wrong (rounds: 0 is an integer below 1);
        # when no branch has the right type, say which types are allowed.
        fitting = [e for e in error.context if e.validator != "type" and not e.relative_path]
        if fitting:
            return _allowed(fitting[0])
        return " or ".join(f"of type {branch.get('type', 'object')}" for branch in schema[kind])
    return error.message


def _lines(validator, instance, where: str = "") -> list[str]:
    """One line per error; ``where`` names the instance inside the config (``a.b``, or "")."""
    lines = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join([where, *map(str, error.absolute_path)]).strip(".")
        key = path or "<top level>"
        if "propertyNames" in error.absolute_schema_path:
            # The bad value is a key of the mapping at ``path`` (a data.datasets name, a method).
            key += " key"
        if error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            prefix = path + "." if path else ""
            lines.append(f"config error: unknown key {prefix}{extra[0]}: allowed are {_allowed(error)}")
        else:
            hint = ""
            if error.validator == "type" and isinstance(error.instance, str) and "object" in str(error.schema.get("type")):
                # A string where a mapping belongs: a quoted mapping, or --config text that is not YAML.
                top = path.split(".")[0]
                hint = f" (write a mapping as YAML, {{name: value, ...}}: in a file added with --configfile, or as --config '{top}={{...}}')"
            lines.append(f"config error: {key} = {error.instance!r}: must be {_allowed(error)}{hint}")
    return lines


def typed_command_line_config(command_line: dict) -> dict:
    """``--config KEY=VALUE`` values with each nested scalar typed as the same text in a YAML file.

    Snakemake types a top-level value itself (a number, True/False, else a string), but reads a
    ``[...]`` or ``{...}`` value with YAML's string-only loader: ``loss={alpha: 0.3}`` arrives as
    ``{"alpha": "0.3"}`` and ``seeds=[0,1]`` as ``["0", "1"]``, which the schema would refuse as
    strings. Merged back over the config (the Snakefile), this accepts them as a config file would;
    a quoted nested value (``{name: "1"}``) cannot be told apart and is typed too."""

    def typed(value, nested: bool):
        if isinstance(value, dict):
            return {key: typed(item, True) for key, item in value.items()}
        if isinstance(value, list):
            return [typed(item, True) for item in value]
        if nested and isinstance(value, str):
            try:
                scalar = yaml.safe_load(value)
            except yaml.YAMLError:
                return value
            return scalar if scalar is None or isinstance(scalar, (bool, int, float)) else value
        return value

    return {key: typed(value, False) for key, value in command_line.items()}


@functools.cache
def _schema(schema_path: Path) -> dict:
    """The schema, read once per process (callers only read it)."""
    return yaml.safe_load(Path(schema_path).read_text())


def check(config: dict, schema_path: Path = SCHEMA) -> None:
    """Raise ConfigError with one line per invalid value (all of them, sorted by key)."""
    lines = _lines(jsonschema.Draft202012Validator(_schema(schema_path)), config)
    if lines:
        raise ConfigError("\n".join(lines))


def check_methods(config: dict, schema_path: Path = SCHEMA) -> None:
    """Raise ConfigError unless every method's resolved settings (preset + method_overrides, on a
    config whose defaults are filled in) satisfy ``$defs/method_settings``: a typo in an override
    must stop the run, not change the method."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    from rosd.method.presets import resolve

    registry = Registry().with_resource("urn:rosd-config", Resource.from_contents(_schema(schema_path), default_specification=DRAFT202012))
    validator = jsonschema.Draft202012Validator({"$ref": "urn:rosd-config#/$defs/method_settings"}, registry=registry)
    lines = []
    for method in dict.fromkeys([*config["methods"], *config["method_overrides"]]):
        lines += _lines(validator, resolve(config, method), where=f"method_overrides.{method}")
    if lines:
        raise ConfigError("\n".join(lines))


def check_names(config: dict) -> None:
    """Raise ConfigError unless every target and benchmark names a world family or a
    ``data.datasets`` entry, and a local ``model.path`` holds a config and a tokenizer that loads."""
    from rosd.world.tasks import FAMILIES

    known = sorted({*FAMILIES, *config["data"]["datasets"]})
    lines = [
        f"config error: {key}.{i} = {name!r}: must be a world task family or a data.datasets entry: {', '.join(known)}"
        for key in ("targets", "benchmarks")
        for i, name in enumerate(config[key])
        if name not in known
    ]
    model = config["model"]
    if model["init"] == "path" and model["path"] and not model["gguf_file"] and Path(model["path"]).exists():
        if problem := _model_dir_problem(Path(model["path"])):
            lines.append(f"config error: model.path = {model['path']!r}: {problem}")
    if lines:
        raise ConfigError("\n".join(lines))


def _model_dir_problem(path: Path) -> str | None:
    """Why a local model directory cannot serve as θ0 (None when it can)."""
    import json

    config_file = path / "config.json"
    try:
        if not isinstance(json.loads(config_file.read_text()), dict):
            return "its config.json is not a JSON object"
    except FileNotFoundError:
        return "no config.json in it (a Hugging Face model directory is expected)"
    except (OSError, ValueError) as error:
        return f"its config.json does not parse ({error})"
    try:
        from rosd.models.loading import load_tokenizer

        tokenizer = load_tokenizer(str(path))
    except Exception as error:  # transformers raises many kinds for a missing or broken tokenizer
        return f"its tokenizer does not load: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    # transformers 5 builds an empty tokenizer when the files are missing: it must encode text.
    if not tokenizer("a b", add_special_tokens=False)["input_ids"]:
        return "its tokenizer does not load: no tokenizer files (tokenizer.json or vocabulary) in the directory"
    return None


def check_runnable(config: dict) -> None:
    """Raise ConfigError when a trained method's resolved settings are ones the trainer cannot run,
    or a method that reads the dataset's reference solution meets a target that has none."""
    from rosd.evaluation.datasets import ADAPTERS_WITHOUT_SOLUTIONS
    from rosd.method.presets import resolve, trains, unsupported

    for method in config["methods"]:
        settings = resolve(config, method)
        if not trains(settings):
            continue
        if problem := unsupported(settings, settings["train"]):
            raise ConfigError(f"config error: {problem}")
        if settings["teacher_context"] != "reference":
            continue
        for target in config["targets"]:
            adapter = config["data"]["datasets"].get(target, {}).get("adapter")
            if adapter in ADAPTERS_WITHOUT_SOLUTIONS:
                raise ConfigError(
                    f"config error: method {method} reads the dataset's reference solution, and target {target}"
                    f" ({adapter}) has none; drop {method} or the target (sdpo uses a sibling rollout instead)"
                )
