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
