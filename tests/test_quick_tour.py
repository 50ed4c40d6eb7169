"""The README's Quick tour runs as written: its ```bash block, read from README.md itself, line by
line in a folder laid out like a checkout after `scripts/demo.sh` (the .venv, sweeps/, and
data/demo = the small real test dataset instead of the demo's 30k jets). Every command must exit
0, and what the issue asked of their output is checked: suites by name, eval says when it caps
the jets and gives W1 with units, the report says what it pooled, no third-party noise."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("FastJet release", "Setting accelerator to CPU", "Token authentication is enabled",
         "Failed to initialize NumPy", "Traceback")


def quick_tour_commands(readme: str) -> list[str]:
    """The lines of the first ```bash block after the `## Quick tour` heading."""
    section = readme.split("\n## Quick tour", 1)[1]
    m = re.search(r"```bash\n(.*?)```", section, re.S)
    assert m, "README's Quick tour has no ```bash block"
    return [ln for ln in m.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_quick_tour_block_is_found():
    cmds = quick_tour_commands((ROOT / "README.md").read_text())
    assert cmds[0] == "source .venv/bin/activate" and any(c.startswith("sweeper run ") for c in cmds)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~3 min on an idle 2-core machine; a busy one (load 25) took ~12
def test_quick_tour_runs_verbatim(real_jets_dir, tmp_path):
    venv = Path(sys.executable).parent.parent
    if not (venv / "bin" / "activate").is_file() or not (venv / "bin" / "sweeper").is_file():
        pytest.skip("needs the project's virtualenv (scripts/setup.sh) with the sweeper command")
    (tmp_path / ".venv").symlink_to(venv)
    shutil.copytree(ROOT / "sweeps", tmp_path / "sweeps")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demo").symlink_to(real_jets_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "RAY_ADDRESS")}
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    outputs = {}
    cmds = quick_tour_commands((ROOT / "README.md").read_text())
    for cmd in cmds[1:]:
        assert cmds[0] == "source .venv/bin/activate"
        p = subprocess.run(["bash", "-c", f"{cmds[0]} && {cmd}"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
        out = p.stdout + p.stderr
        assert p.returncode == 0, f"`{cmd}` exited {p.returncode}:\n{out[-3000:]}"
        for noise in NOISE:
            assert noise not in out, f"`{cmd}` printed {noise!r}:\n{out[-3000:]}"
        outputs[cmd.split("#")[0].strip()] = out

    def out_of(prefix: str) -> str:
        return next(v for k, v in outputs.items() if k.startswith(prefix))

    status = out_of("sweeper status smoke")
    assert all(f"[{s}] done" in status for s in ("smoke-model", "smoke-data", "smoke-isoflop"))
    assert "skipped" in out_of("sweeper resume smoke") and "ran 0" in out_of("sweeper resume smoke")
    ev = out_of("sweeper eval smoke-model Pico")
    assert "note: evaluating" in ev and "SWD floor needs two disjoint real samples" in ev
    # W1 with units (n/a when a 20-step Pico generates no valid jet)
    assert re.search(r"W1 vs real .*jet_pt (n/a|[0-9.e+-]+ \+- [0-9.e+-]+ GeV).*n_constituents (n/a|\S+ \+- \S+ constituents)", ev)
    rep = out_of("sweeper report smoke")
    assert "not pooled" in rep and "smoke-model" in rep and (tmp_path / "smoke.html").is_file()
    assert (tmp_path / "runs" / "manual" / "pico" / "result.json").is_file()
    # `report all --pool` pools on request and says so
    p = subprocess.run(["bash", "-c", f"{cmds[0]} && sweeper report all --pool --n-boot 20"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "pooled into one fit (--pool): " in p.stdout, p.stdout + p.stderr
    assert all(f"{s} ({ph};" in p.stdout for s, ph in (("smoke-model", "model_size"), ("smoke-data", "data_size"),
                                                        ("smoke-isoflop", "isoflop")))
