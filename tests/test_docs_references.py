"""No file of the repo cites a document the repo does not hold.

Every `*.md` name mentioned in a tracked source or documentation file (e.g. `docs/DESIGN.md`,
`cluster/README.md`) must exist relative to the repository root or to the citing file's folder,
and every relative markdown link `[text](path)` must exist too. Paths outside the repository
(absolute /work/... folders of the machine the code was written on) are never cited.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_SUFFIXES = {".py", ".md", ".sh", ".yaml", ".yml", ".toml", ".txt", ".cfg"}
MD_REF = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")
MD_LINK = re.compile(r"\[[^\]]*\]\(([^)\s#]+)(?:#[^)]*)?\)")
OUTSIDE = re.compile(r"/work/(?:shared|wt|main)\b")


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        files = [ROOT / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        files = [p for p in ROOT.rglob("*") if ".venv" not in p.parts and ".git" not in p.parts]
    this = Path(__file__).resolve()  # holds the probe strings of test_the_check_can_fail
    return [p for p in files if p.suffix in SOURCE_SUFFIXES and p.is_file() and p.resolve() != this]


def _exists(ref: str, citing: Path, root: Path) -> bool:
    return (root / ref).exists() or (citing.parent / ref).exists()


def dangling_references(files: list[Path], root: Path = ROOT) -> list[str]:
    bad = []
    for f in files:
        text = f.read_text(errors="replace")
        rel = f.relative_to(root)
        for m in MD_REF.finditer(text):
            if not _exists(m.group(1), f, root):
                bad.append(f"{rel}: cites {m.group(1)}")
        if f.suffix == ".md":
            for m in MD_LINK.finditer(text):
                target = m.group(1)
                if "://" in target or target.startswith("mailto:"):
                    continue
                if not _exists(target, f, root):
                    bad.append(f"{rel}: links {target}")
        for m in OUTSIDE.finditer(text):
            bad.append(f"{rel}: cites a path outside the repo ({m.group(0)})")
    return bad


def test_no_file_cites_a_missing_document():
    files = _tracked_files()
    assert any(f.name == "DESIGN.md" for f in files), "docs/DESIGN.md is part of the repo"
    assert dangling_references(files) == []


def test_the_check_can_fail(tmp_path):
    """The scanner flags a missing document, a broken link and an outside path (and accepts a
    document beside the citing file)."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "DESIGN.md").write_text("# design\n")
    f = tmp_path / "docs" / "probe.md"
    f.write_text("see NOPE_missing_doc.md and DESIGN.md; [x](nope/missing.txt); /work/shared/DESIGN.md\n")
    bad = dangling_references([f], root=tmp_path)
    assert any("NOPE_missing_doc.md" in b for b in bad)
    assert any("nope/missing.txt" in b for b in bad)
    assert any("outside the repo" in b for b in bad)
    assert not any(b.endswith("cites DESIGN.md") for b in bad)  # docs/DESIGN.md, beside the file


# ---------------------------------------------------------------------------------------------
# Anchors: a link `[text](page.md#heading)` or `[text](#heading)` names a heading that exists.

HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
MD_ANCHOR_LINK = re.compile(r"\[[^\]]*\]\(([^)\s#]*)#([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def heading_slugs(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a markdown text: lower case, punctuation other than
    '-' and '_' dropped, spaces to '-', repeated headings numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    out = set()
    for title in HEADING.findall(FENCE.sub("", markdown)):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link in a heading keeps its text
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def dangling_anchors(files: list[Path], root: Path = ROOT) -> list[str]:
    bad = []
    for f in files:
        if f.suffix != ".md":
            continue
        text = f.read_text(errors="replace")
        for m in MD_ANCHOR_LINK.finditer(FENCE.sub("", text)):
            target, anchor = m.group(1), m.group(2)
            if "://" in target:
                continue
            page = f if not target else next(
                (p for p in (root / target, f.parent / target) if p.is_file()), None)
            if page is None or page.suffix != ".md":
                continue  # a missing page is dangling_references' finding
            if anchor not in heading_slugs(page.read_text(errors="replace")):
                bad.append(f"{f.relative_to(root)}: links {target}#{anchor}, a heading {page.name} does not have")
    return bad


def test_no_link_names_a_missing_heading():
    assert dangling_anchors(_tracked_files()) == []


# ---------------------------------------------------------------------------------------------
# Commands: every `sweeper ...` a document names (in code spans and code blocks) is a real
# subcommand, and every --option it shows exists on that subcommand.

CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
COMMAND = re.compile(r"(?<![\w./-])(?:sweeper|-m scaling_sweeper\.cli)\s+([a-z][\w-]*)(.*)")
OPTION = re.compile(r"(?<![\w-])(--[a-z][\w-]*)")


def _code_lines(markdown: str) -> list[str]:
    """Lines of fenced code blocks (continuation backslashes joined) and inline code spans."""
    lines = []
    for block in FENCE.findall(markdown):
        lines += block.replace("\\\n", " ").splitlines()[1:-1]
    lines += CODE_SPAN.findall(FENCE.sub("", markdown))
    return lines


def _subcommands(parser) -> dict:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def unknown_commands(files: list[Path], parser, root: Path = ROOT) -> list[str]:
    """'file: `command`: problem' for each named command that the CLI parser does not have."""
    top = _subcommands(parser)
    bad = []
    for f in files:
        if f.suffix != ".md":
            continue
        for line in _code_lines(f.read_text(errors="replace")):
            for m in COMMAND.finditer(line):
                name = m.group(1)
                rest = re.split(r"\s(?:#|\|\||&&|\||;)\s?", " " + m.group(2))[0]
                rest = re.sub(r"\"[^\"]*\"|'[^']*'", "", rest)  # quoted SQL, globs
                where = f"{f.relative_to(root)}: `sweeper {name}{m.group(2)[:60]}`"
                if name not in top:
                    bad.append(f"{where}: no command {name!r}")
                    continue
                sub = top[name]
                nested = _subcommands(sub)
                if nested:  # sweeper data make (`make|tokenize|info`: each alternative checked)
                    words = rest.split()
                    action = next((w.strip("`") for w in words if not w.startswith("-")), None)
                    missing = [a for a in (action or "").split("|") if a not in nested]
                    if action is None or missing:
                        bad.append(f"{where}: no action {missing[0] if missing else action!r} of {name}")
                        continue
                    sub = nested[action.split("|")[0]]
                known = {s for a in sub._actions for s in a.option_strings}
                for opt in OPTION.findall(rest):
                    if opt not in known:
                        bad.append(f"{where}: {name} has no option {opt}")
    return bad


def _doc_files() -> list[Path]:
    return [f for f in _tracked_files() if f.suffix == ".md"]


def test_every_named_command_is_a_real_subcommand():
    from scaling_sweeper.cli import build_parser

    files = _doc_files()
    assert any(f.name == "README.md" and f.parent == ROOT for f in files)
    assert unknown_commands(files, build_parser()) == []


def test_the_command_and_anchor_checks_can_fail(tmp_path):
    """An unknown command, an unknown action, an unknown option and a missing heading are found;
    placeholders, quoted SQL, comments and a real heading are not."""
    from scaling_sweeper.cli import build_parser

    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n\n## Data at scale: chunks\n\nsee [a](#data-at-scale-chunks), [b](#nope-heading), "
        "[c](other.md#x)\n\n"
        "```bash\nsweeper frobnicate x\nsweeper data munge --out x\nsweeper run spec.yaml --no-such-flag\n"
        "sweeper run spec.yaml --set budget.flops=1  # --not-an-option in a comment\n"
        "sweeper query \"SELECT 1 -- --not-an-option\" --format csv\n```\n\n"
        "`sweeper logs <sweep> [<cell>]` and `sweeper data make --out x \\\n--n-jets 5`\n"
        "```\ncli/data.py  `sweeper data make|tokenize|info`\ncli/x.py  `sweeper data info|munge2`\n```\n")
    bad = unknown_commands([page], build_parser(), root=tmp_path)
    assert any("no command 'frobnicate'" in b for b in bad)
    assert any("no action 'munge'" in b for b in bad)
    assert any("no action 'munge2'" in b for b in bad)
    assert any("no option --no-such-flag" in b for b in bad)
    assert len(bad) == 4, bad
    bad = dangling_anchors([page], root=tmp_path)
    assert len(bad) == 1 and "#nope-heading" in bad[0], bad
    assert heading_slugs("## Data-constrained arms: `phase: repetition`\n## A\n## A\n") == {
        "data-constrained-arms-phase-repetition", "a", "a-1"}


# ---------------------------------------------------------------------------------------------
# The README is the front door: its "Where to go next" links every page of docs/ and the CHANGELOG.

WHERE_NEXT = re.compile(r"^## Where to go next\s*$(.*?)(?=^## |\Z)", re.M | re.S)


def pages_the_readme_does_not_link(root: Path = ROOT) -> list[str]:
    """Pages under docs/ (and CHANGELOG.md) that README.md's "Where to go next" section does not link."""
    m = WHERE_NEXT.search((root / "README.md").read_text())
    if m is None:
        return ["README.md has no '## Where to go next' section"]
    linked = {(root / t).resolve() for t in MD_LINK.findall(m.group(1)) if "://" not in t}
    pages = sorted((root / "docs").glob("*.md")) + [p for p in [root / "CHANGELOG.md"] if p.is_file()]
    return [str(p.relative_to(root)) for p in pages if p.resolve() not in linked]


def test_the_readme_links_every_docs_page():
    assert pages_the_readme_does_not_link() == []


def test_the_readme_link_check_can_fail(tmp_path):
    """A docs page linked elsewhere in the README but not under "Where to go next" is found."""
    (tmp_path / "docs").mkdir()
    for name in ("a.md", "b.md", "DESIGN.md"):
        (tmp_path / "docs" / name).write_text("# x\n")
    (tmp_path / "README.md").write_text(
        "# R\n\nsee [b](docs/b.md)\n\n## Where to go next\n\n| [docs/a.md](docs/a.md) | a |\n"
        "| [docs/DESIGN.md](docs/DESIGN.md#layers) | design |\n\n## Later\n\n[b](docs/b.md)\n")
    assert pages_the_readme_does_not_link(tmp_path) == ["docs/b.md"]
