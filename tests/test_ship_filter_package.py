"""`sweeper submit` refuses to ship secret-looking files (cluster/ship_filter.py). The package's own
code must never look like one, or a job on a cluster fails to import it (a module once named
base/secret_scrub.py was silently left behind by the filter's `*secret*` rule)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from scaling_sweeper.cluster.ship_filter import is_secret_name, secret_content

REPO = Path(__file__).resolve().parents[1]


def _tracked(prefixes: tuple[str, ...]) -> list[str]:
    out = subprocess.run(["git", "ls-files", *prefixes], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_no_file_a_job_imports_is_held_back_by_the_ship_filter():
    files = _tracked(("scaling_sweeper", "analysis", "sweeps", "cluster", "pyproject.toml"))
    assert files, "git ls-files found nothing"
    held = [f for f in files if is_secret_name(f) or secret_content(REPO / f)]
    assert held == [], f"these files would not reach a cluster: {held}"


def test_the_check_sees_a_secret_looking_module_name():
    assert is_secret_name("scaling_sweeper/base/secret_scrub.py")
