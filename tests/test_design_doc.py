"""docs/DESIGN.md is the one description of the architecture: its module list names every module
of the package with its layer, and its results schema shows the columns, types and fillers of
every table, in order (base/results_schema.py). A module added, moved or removed, or a column
changed, fails here until the document says so."""

from __future__ import annotations

import re
from pathlib import Path

from scaling_sweeper.base.results_schema import TABLE_COLUMNS
from tests.test_layers import find_modules, layer_of

REPO = Path(__file__).resolve().parents[1]
DESIGN = REPO / "docs/DESIGN.md"


def _section(text: str, heading: str) -> str:
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"docs/DESIGN.md has no section '## {heading}'"
    return m.group(1)


def documented_modules(text: str) -> dict[str, str]:
    """module path (relative to scaling_sweeper/) -> layer, from the `## Modules` block."""
    out = {}
    for line in _section(text, "Modules").splitlines():
        m = re.match(r"^(\w+)\s+(\S+\.py)\s+\S", line)
        if m:
            out[m.group(2)] = m.group(1)
    return out


def documented_tables(text: str) -> dict[str, list[tuple[str, str, str]]]:
    """table -> [(column, type, filled by)] from the `### Table ...` blocks of the schema section."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    parts = re.split(r"^### Table `(\w+)`\n", _section(text, "The results schema"), flags=re.M)
    for name, body in zip(parts[1::2], parts[2::2]):
        out[name] = re.findall(r"^\| `(\w+)` \| (\w+) \| (\w+) \|", body, re.M)
    return out


def _package_modules() -> dict[str, str]:
    mods = find_modules(REPO, ("scaling_sweeper",))
    return {str(p.relative_to(REPO / "scaling_sweeper")): layer_of(m) for m, p in mods.items()
            if p.name not in ("__init__.py", "__main__.py")}


def test_module_list_matches_the_package():
    doc, code = documented_modules(DESIGN.read_text()), _package_modules()
    assert sorted(set(code) - set(doc)) == [], "modules missing from docs/DESIGN.md ## Modules"
    assert sorted(set(doc) - set(code)) == [], "docs/DESIGN.md lists modules that do not exist"
    assert {m: doc[m] for m in code} == code, "docs/DESIGN.md puts a module in another layer than its folder"


def test_results_schema_matches_the_code():
    doc = documented_tables(DESIGN.read_text())
    code = {t: [(c.name, c.type.__name__, c.by) for c in cols] for t, cols in TABLE_COLUMNS.items()}
    assert doc == code


def test_the_checks_can_fail():
    text = DESIGN.read_text()
    assert "base/errors.py" in documented_modules(text)
    assert "base/errors.py" not in documented_modules(text.replace("base/errors.py", "base/error.py"))
    broken = text.replace("| `N_incl` | int |", "| `N_incl` | float |")
    assert documented_tables(broken)["trials"] != documented_tables(text)["trials"]
