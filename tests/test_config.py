"""Strict dataclass <-> YAML configs and --set overrides."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scaling_sweeper.base.config import (
    apply_overrides,
    dump_yaml,
    from_dict,
    load_yaml,
    parse_override,
    to_dict,
)
from scaling_sweeper.base.errors import ConfigError


@dataclass
class Inner:
    flops: float = 1.0
    cluster: str = "default"


@dataclass
class Outer:
    name: str
    steps: int = 10
    sizes: list[str] = field(default_factory=list)
    budget: Inner = field(default_factory=Inner)
    lr: float | None = None
    out: Path = Path("runs")
    flag: bool = False


def test_round_trip_and_coercion():
    cfg = from_dict(Outer, {"name": "x", "steps": 2e3, "sizes": ["Pico"], "budget": {"flops": "1e15"}})
    assert cfg.steps == 2000 and isinstance(cfg.steps, int)
    assert cfg.budget.flops == 1e15
    again = from_dict(Outer, to_dict(cfg))
    assert again == cfg
    assert "name: x" in dump_yaml(cfg)


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"name": "x", "stpes": 3}, "stpes"),
        ({"name": "x", "budget": {"flopz": 1}}, "budget.flopz"),
        ({"name": "x", "steps": 2.5}, "steps"),
        ({"name": "x", "steps": True}, "steps"),
        ({"name": "x", "sizes": "Pico"}, "sizes"),
        ({"name": "x", "budget": {"flops": "lots"}}, "budget.flops"),
        ({"name": "x", "flag": "yes"}, "flag"),
        ({"steps": 3}, "name"),
    ],
)
def test_errors_name_the_field(data, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        from_dict(Outer, data)


def test_overrides():
    base = {"name": "x", "budget": {"flops": 1.0}}
    out = apply_overrides(base, ["budget.flops=3e18", "steps=7", "sizes=[Pico, S]", "new.key=1"])
    assert out["budget"]["flops"] == 3e18 and out["steps"] == 7 and out["sizes"] == ["Pico", "S"]
    assert base["budget"]["flops"] == 1.0  # not mutated
    with pytest.raises(ConfigError):
        parse_override("no_equals_sign")
    with pytest.raises(ConfigError):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_load_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(lst)
