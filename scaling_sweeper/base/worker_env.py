"""The environment a child Python process (a Ray worker, a Ray Train worker) needs to import this
package: nothing when it is installed (a regular or editable `pip install`), else PYTHONPATH to
this checkout. Read by the Ray connection and the ZeRO trainer; no Ray import here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import scaling_sweeper


def repo_root() -> Path:
    """The folder that holds the `scaling_sweeper` package (the source checkout when not installed)."""
    return Path(scaling_sweeper.__file__).resolve().parent.parent


def package_is_installed() -> bool:
    """Whether any interpreter of this environment imports this checkout's package (a regular or
    an editable `pip install`), so workers need no PYTHONPATH."""
    if "site-packages" in str(Path(scaling_sweeper.__file__).resolve()):
        return True
    from importlib.metadata import distributions

    # editable install (PEP 610 direct_url.json) pointing at this checkout; a source checkout's
    # own *.egg-info in the cwd also shows up as a distribution, without direct_url.json
    for dist in distributions(name="scaling-sweeper"):
        try:
            url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
        except json.JSONDecodeError:
            continue
        if url.startswith("file://") and Path(url[len("file://"):]).resolve() == repo_root():
            return True
    return False


def worker_env() -> dict[str, str]:
    """Environment Ray workers need: PYTHONPATH to this checkout when the package is not installed
    (empty otherwise, so no runtime_env is needed and prestarted workers can be used)."""
    env: dict[str, str] = {}
    if not package_is_installed():
        root = str(repo_root())
        parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in parts if p != root]])
    return env
