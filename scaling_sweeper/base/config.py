"""Typed dataclass configs <-> YAML, with strict keys and `a.b=value` CLI overrides.

Every config in the project is a (possibly nested) dataclass. `from_dict` rejects unknown keys
and wrong types with a `ConfigError` that names the dotted field path, so a typo in a sweep
spec fails before any compute is spent.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from scaling_sweeper.base.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check/convert `value` to annotation `tp`; raise ConfigError naming `path`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, path)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1:  # `X | None`: X's own message names the field
            raise ConfigError(errors[0])
        raise ConfigError(f"{path}: {value!r} does not match {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping for {_type_name(tp)}, got {value!r}")
        return from_dict(tp, value, _path=path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, path): _coerce(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # YAML 2e6 -> 2000000.0 -> 2000000
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                raise ConfigError(f"{path}: expected an integer, got {value!r}") from None
            if f.is_integer():
                return int(f)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e15" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{path}: expected a path, got {value!r}")
    return value


def _move_legacy_keys(cls: type, data: dict[str, Any], path: str) -> dict[str, Any]:
    """Keys of earlier versions of `cls` moved to where they live now: `cls.LEGACY_KEYS` maps an
    old top-level key to a dotted path (e.g. num_workers -> zero.num_workers). Giving both is a
    ConfigError naming them."""
    legacy = getattr(cls, "LEGACY_KEYS", None)
    if not legacy or not set(data) & set(legacy):
        return data
    out = {k: v for k, v in data.items() if k not in legacy}
    for old, new in legacy.items():
        if old not in data:
            continue
        *parents, leaf = new.split(".")
        node = out
        for k in parents:
            node[k] = dict(node.get(k) or {})
            node = node[k]
        if leaf in node:
            where = f"{path}." if path else ""
            raise ConfigError(f"{where}{old} and {where}{new} are the same setting: give one")
        node[leaf] = data[old]
    return out


def from_dict(cls: type[T], data: dict[str, Any], _path: str = "") -> T:
    """Build dataclass `cls` from a plain dict, strictly (unknown keys and bad types raise). Keys
    of earlier versions listed in `cls.LEGACY_KEYS` are read into their new place first."""
    if not isinstance(data, dict):
        raise ConfigError(f"{_path or cls.__name__}: expected a mapping, got {data!r}")
    data = _move_legacy_keys(cls, data, _path)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{_path}." if _path else ""
        raise ConfigError(
            f"unknown key(s) {', '.join(where + k for k in unknown)} "
            f"(allowed: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{_path}.{name}" if _path else name)
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        where = f"{_path}." if _path else ""
        raise ConfigError(f"missing required key(s) {', '.join(where + m for m in missing)}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{_path or cls.__name__}: {e}") from None


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict of YAML-safe values (Paths become strings, tuples lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a","b","c"], yaml-parsed value). Raises ConfigError if malformed."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str):  # YAML 1.1 reads "3e18" (no dot) as a string
        try:
            num = float(value)
            value = int(num) if num.is_integer() and "e" not in value.lower() and "." not in value else num
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of nested dict `data` with each `a.b=value` override set."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {k} is not a mapping")
            node = nxt
        node[keys[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or non-mapping top level is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file")
    from scaling_sweeper.base.strict_yaml import load as strict_load

    data = strict_load(p.read_text(), str(p))  # duplicate keys, alias bombs: ConfigError
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data


def dump_yaml(obj: Any) -> str:
    """Dataclass or dict -> YAML text (keys in field order)."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False)
