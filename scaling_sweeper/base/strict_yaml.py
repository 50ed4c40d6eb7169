"""YAML for specs, read strictly: no duplicate keys, no alias bombs, bounded errors.

PyYAML's safe loader lets the last of two equal keys win silently (`lr: 1e-3` then `lr: 1`
trains with 1), and expands aliases without limit: nine levels of `&a [*b, *b, ...]` are a few
hundred bytes of text but 10^9 values once built, and an error message that prints the value
ran to 1.6 GB. `load` composes the document first, counts the values it would build (each alias
counted as the full size of what it names, shared parts memoised so the count itself is cheap),
and refuses more than MAX_NODES, recursive aliases, and nesting deeper than MAX_DEPTH, before
constructing anything. Errors are ConfigErrors naming the line.
"""

from __future__ import annotations

from typing import Any

import yaml

from scaling_sweeper.base.errors import ConfigError

MAX_NODES = 200_000  # values (scalars, lists, mappings) a spec may expand to; real specs hold < 10^3
MAX_DEPTH = 100  # nesting levels


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader refusing duplicate mapping keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise ConfigError(f"duplicate key {str(key)[:80]!r} at line {line} (first at line {seen[key]}); "
                                      "YAML would silently keep only the last one")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node) -> int:
    """How many values constructing `root` makes (ConfigError beyond MAX_NODES, on a recursive
    alias or nesting beyond MAX_DEPTH). Iterative: deep documents cannot overflow the stack."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, children_done = stack.pop()
        nid = id(node)
        if children_done:
            on_path.discard(nid)
            kids = _children(node)
            total = 1 + sum(size[id(k)] for k in kids)
            if total > MAX_NODES:
                raise ConfigError(f"line {node.start_mark.line + 1}: the YAML expands to more than {MAX_NODES} values "
                                  "(aliases of aliases: an alias bomb?); refusing to build it")
            size[nid] = total
            continue
        if nid in size:
            continue
        if nid in on_path:
            raise ConfigError(f"line {node.start_mark.line + 1}: a recursive YAML alias (an anchor used inside itself)")
        if depth > MAX_DEPTH:
            raise ConfigError(f"line {node.start_mark.line + 1}: YAML nested deeper than {MAX_DEPTH} levels")
        on_path.add(nid)
        stack.append((node, depth, True))
        for k in _children(node):
            if id(k) not in size:
                stack.append((k, depth + 1, False))
    return size[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for kv in node.value for n in kv]
    return []


def load(text: str, where: str = "YAML") -> Any:
    """Parse one YAML document strictly (module doc). ConfigError (prefixed with `where`) on
    invalid YAML, duplicate keys, alias bombs, recursion or excessive nesting."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {str(e)[:500]}") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply") from None
    finally:
        loader.dispose()


__all__ = ["MAX_DEPTH", "MAX_NODES", "load"]
