"""Config checking: one line per bad value, naming the key, the value and what is allowed.

Snakemake's own ``validate`` (called in the Snakefile) fills in the schema's defaults; this module
runs first so that a bad value stops the run before any job with a message a person can act on.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

SCHEMA = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


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
    return error.message


def _key(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def check(config: dict, schema_path: Path = SCHEMA) -> None:
    """Raise ConfigError with one line per invalid value (all of them, sorted by key)."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    lines = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        if error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            prefix = _key(error) + "." if error.absolute_path else ""
            lines.append(f"config error: unknown key {prefix}{extra[0]}: allowed are {_allowed(error)}")
        else:
            lines.append(f"config error: {_key(error)} = {error.instance!r}: must be {_allowed(error)}")
    if lines:
        raise ConfigError("\n".join(lines))
