"""Config checking: each bad value is one line naming the key, the value and what is allowed."""

from pathlib import Path

import pytest
import yaml

from rosd.config import ConfigError, check

DEFAULT = yaml.safe_load((Path(__file__).resolve().parent.parent / "config" / "config.yaml").read_text())


def test_default_config_is_valid():
    check(DEFAULT)


@pytest.mark.parametrize(
    "change, line",
    [
        ({"rounds": 0}, "config error: rounds = 0: must be a number >= 1"),
        ({"loss": {"alpha": 1.5}}, "config error: loss.alpha = 1.5: must be a number <= 1"),
        ({"methods": ["rosd", "ppo"]}, "config error: methods.1 = 'ppo': must be one of 'base', 'rosd', 'rosd_reflection_only', 'rosd_no_mask', 'sdpo', 'opsd', 'grpo'"),
        ({"train": {"lr": "fast"}}, "config error: train.lr = 'fast': must be of type number"),
        ({"evaluation": {"sample": 4}}, "config error: unknown key evaluation.sample: allowed are max_new_tokens, rounds, samples, temperature, top_p"),
    ],
)
def test_bad_value_is_one_clear_line(change, line):
    with pytest.raises(ConfigError) as error:
        check({**DEFAULT, **change})
    assert str(error.value) == line


def test_every_bad_value_is_reported():
    with pytest.raises(ConfigError) as error:
        check({**DEFAULT, "rounds": 0, "seeds": [-1]})
    assert len(str(error.value).splitlines()) == 2


def test_every_schema_key_is_documented():
    schema = yaml.safe_load((Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml").read_text())

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            if "properties" in sub:
                yield from walk(sub, path + [key])
            else:
                yield path + [key], sub

    undocumented = [".".join(p) for p, sub in walk(schema, []) if "description" not in sub]
    assert not undocumented, f"schema keys without a description: {undocumented}"
