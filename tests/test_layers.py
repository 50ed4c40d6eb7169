"""The package's layers, read from its imports: no import cycles, no import of a higher layer.

Layers, low -> high (docs/DESIGN.md); a module's layer is the folder it lives in:

    base      errors, config io, run-folder io, progress, quiet, flops, schedule, model sizes,
              the results schema (pure: no torch)
    model     the GPT (scaling_sweeper/model.py)
    data      jet sources, tokenizers, token shards
    train     the trial lifecycle and its one step loop, single-process and ZeRO steps, checkpoints
    evaluate  sampling, observables, SWD
    results   the results tables' writer, what a sweep folder says about its state
    sweep     spec, phases, cells, ledger, admission, the driver, reuse, reconcile
    cluster   the Ray connection, the local cluster, Ray jobs
    cli       the `sweeper` command line

`analysis` sits beside: it may import only the base and results layers (and itself); the sweep
layer and above may import the pure-math packages `analysis.fits` (the fits) and `analysis.design`
(the adaptive design's engine: numpy/scipy math like the fits, no Ray or torch; the design
phase's searcher asks it for the next cell as trials finish, inside the driver). Every `import`
statement of every module counts, function-level ones included; those under `if TYPE_CHECKING:` do not.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("scaling_sweeper", "analysis")
LAYERS = ("base", "model", "data", "train", "evaluate", "results", "sweep", "cluster", "cli")
# modules that are a layer on their own, not a folder (nanoGPT style: one readable model.py)
SINGLE_MODULE_LAYERS = {"scaling_sweeper.model": "model"}
# what `analysis` may import from the package; the layer from which the pure-math packages of
# `analysis` (PURE_MATH) are importable
ANALYSIS_MAY_IMPORT = ("base", "results")
FITS_IMPORTABLE_FROM = "sweep"
PURE_MATH = ("analysis.fits", "analysis.design")

# Modules not yet in their layer's folder (issue 23: being moved), by layer. Only shrinks.
PLACED: dict[str, str] = {}

# Known violations being removed step by step (issue 23). This list only shrinks: an entry that
# is no longer a violation fails `test_allow_list_is_current`, so it has to be deleted.
ALLOWED: set[tuple[str, str]] = set()


def find_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of `packages` under `root`."""
    out = {}
    for pkg in packages:
        for p in sorted((root / pkg).rglob("*.py")):
            parts = list(p.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return skip


def module_imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported project module, line) for every import statement of module `name`, at any depth
    (function-level included, `if TYPE_CHECKING:` blocks excluded). `from pkg import x` names the
    submodule pkg.x when there is one; anything outside `modules` (third-party) is left out."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_nodes(tree)
    is_pkg = path.name == "__init__.py"
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.append((sub if sub in modules else target, node.lineno))
    out: list[tuple[str, int]] = []
    for target, line in found:
        while target and target not in modules:  # a name inside a module -> the module
            target = target.rpartition(".")[0]
        if target and target != name and (target, line) not in out:
            out.append((target, line))
    return out


def layer_of(module: str) -> str:
    """The layer a module belongs to: its folder under scaling_sweeper/ (SINGLE_MODULE_LAYERS for
    the model), `analysis` for the analysis package, `package` for scaling_sweeper/__init__.py."""
    parts = module.split(".")
    if parts[0] == "analysis":
        return next((p for p in PURE_MATH if module == p or module.startswith(p + ".")), "analysis")
    if module in SINGLE_MODULE_LAYERS:
        return SINGLE_MODULE_LAYERS[module]
    if module in PLACED:
        return PLACED[module]
    if len(parts) == 1:
        return "package"
    if parts[1] in LAYERS and (len(parts) > 2 or (REPO / "scaling_sweeper" / parts[1]).is_dir()):
        return parts[1]
    raise AssertionError(f"{module} lives in no layer folder (one of {', '.join(LAYERS)})")


def may_import(src: str, dst: str) -> bool:
    """Whether layer `src` may import layer `dst` (see the module docstring)."""
    if dst == "package":  # scaling_sweeper/__init__.py: only the version
        return True
    if src == "analysis" or src in PURE_MATH:
        return dst in (*ANALYSIS_MAY_IMPORT, "analysis", *PURE_MATH)
    if dst in PURE_MATH:
        return src == "package" or LAYERS.index(src) >= LAYERS.index(FITS_IMPORTABLE_FROM)
    if dst == "analysis":
        return src == "cli"
    if src == "package":
        return False
    return LAYERS.index(dst) <= LAYERS.index(src)


@functools.cache
def import_graph(root: Path = REPO) -> tuple[dict[str, Path], dict[str, list[tuple[str, int]]]]:
    modules = find_modules(root)
    return modules, {m: module_imports(m, p, modules) for m, p in modules.items()}


def upward_imports(modules, graph) -> list[str]:
    """'importer (layer) -> imported (layer) at file:line' for each import a layer may not make."""
    out = []
    for m, edges in graph.items():
        for dst, line in edges:
            a, b = layer_of(m), layer_of(dst)
            if not may_import(a, b) and (m, dst) not in ALLOWED:
                out.append(f"{m} ({a}) imports {dst} ({b}) at {modules[m].relative_to(REPO)}:{line}")
    return out


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w, _ in graph.get(v, []):
            if (v, w) in ALLOWED:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _cycle_text(comp: list[str], graph, modules) -> str:
    edges = [f"{a} -> {b} ({modules[a].relative_to(REPO)}:{line})"
             for a in comp for b, line in graph[a] if b in comp and (a, b) not in ALLOWED]
    return "import cycle: " + "; ".join(edges)


def test_every_module_is_in_a_layer():
    modules, _ = import_graph()
    for m in modules:
        layer_of(m)  # AssertionError naming the module otherwise


def test_no_import_cycles():
    modules, graph = import_graph()
    found = cycles(graph)
    assert not found, "\n".join(_cycle_text(c, graph, modules) for c in found)


def test_no_upward_imports():
    modules, graph = import_graph()
    bad = upward_imports(modules, graph)
    assert not bad, "imports of a higher layer (docs/DESIGN.md, layers):\n" + "\n".join(bad)


def test_allow_list_is_current():
    """Every allowed violation still exists (a fixed one must leave the list)."""
    _, graph = import_graph()
    edges = {(m, d) for m, es in graph.items() for d, _ in es}
    assert not sorted(ALLOWED - edges), f"no longer imported, remove from ALLOWED: {sorted(ALLOWED - edges)}"


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_checker_finds_cycles_and_upward_imports(tmp_path):
    """The checker itself, on a made-up package: a function-level upward import and a two-module
    cycle are found, an import under TYPE_CHECKING is not."""
    _write(tmp_path, {
        "scaling_sweeper/__init__.py": "",
        "scaling_sweeper/base/__init__.py": "",
        "scaling_sweeper/base/a.py": "def f():\n    from scaling_sweeper.sweep import s\n",
        "scaling_sweeper/data/__init__.py": "",
        "scaling_sweeper/data/x.py": "from scaling_sweeper.data import y\n",
        "scaling_sweeper/data/y.py": "from . import x\nfrom scaling_sweeper.base.a import f\n",
        "scaling_sweeper/sweep/__init__.py": "",
        "scaling_sweeper/sweep/s.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                      "    from scaling_sweeper.cli import c\n",
        "scaling_sweeper/cli/__init__.py": "",
        "scaling_sweeper/cli/c.py": "import numpy\nimport analysis.t\n",
        "analysis/__init__.py": "",
        "analysis/t.py": "from scaling_sweeper.sweep.s import x\n",
    })
    modules = find_modules(tmp_path)
    graph = {m: module_imports(m, p, modules) for m, p in modules.items()}
    assert graph["scaling_sweeper.sweep.s"] == []  # TYPE_CHECKING only
    assert ("scaling_sweeper.sweep.s", 2) in graph["scaling_sweeper.base.a"]
    assert ("scaling_sweeper.data.x", 1) in graph["scaling_sweeper.data.y"]  # relative import
    assert cycles(graph) == [["scaling_sweeper.data.x", "scaling_sweeper.data.y"]]
    ups = {(m, d) for m, es in graph.items() for d, _ in es if not may_import(layer_of(m), layer_of(d))}
    assert ups == {("scaling_sweeper.base.a", "scaling_sweeper.sweep.s"),
                   ("analysis.t", "scaling_sweeper.sweep.s")}


@pytest.mark.parametrize("src,dst,ok", [
    ("sweep", "analysis.fits", True), ("train", "analysis.fits", False), ("results", "analysis", False),
    ("sweep", "analysis.design", True), ("train", "analysis.design", False), ("analysis.design", "sweep", False),
    ("analysis.design", "analysis.fits", True), ("cluster", "analysis.design", True),
    ("analysis", "results", True), ("analysis", "base", True), ("analysis", "sweep", False),
    ("analysis.fits", "sweep", False), ("cli", "analysis", True), ("data", "evaluate", False),
    ("evaluate", "train", True), ("base", "base", True), ("package", "base", False),
])
def test_layer_rule(src, dst, ok):
    assert may_import(src, dst) is ok
