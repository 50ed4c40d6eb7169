"""The HTML report renders from a synthetic results folder (rows shaped like real results rows),
every figure is present, missing data are said plainly, and `analysis` works without torch/Ray."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from analysis.report import write_report
from analysis.synthetic import synthetic_rows, write_synthetic_sweep
from scaling_sweeper.cli import main as cli_main
from scaling_sweeper.results.tables import write_cell_tables

REPO = Path(__file__).resolve().parents[1]

FIGURES = [
    "fig-loss-vs-n", "fig-loss-vs-d", "fig-isoflop", "fig-isoflop-opt", "fig-swd-vs-n", "fig-swd-vs-d",
    "fig-loss-vs-swd",
    "fig-learning-curves", "fig-frontier", "fig-window-val-loss-D", "fig-window-swd-D", "fig-window-val-loss-C",
    "fig-window-val-loss-N", "fig-window-swd-N", "fig-chinchilla", "fig-position-loss", "fig-position-gain",
]
SECTIONS = ["summary", "loss-vs-n", "loss-vs-d", "isoflop", "swd-vs-n", "swd-vs-d", "loss-vs-swd", "seeds",
            "histograms",
            "positions", "learning-curves",
            "windows", "chinchilla", "holdout", "parameters"]


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.h2: list[str] = []
        self.scripts_src: list[str] = []
        self.n_scripts = 0
        self.missing: list[str] = []
        self._tag: str | None = None
        self._cls: str | None = None
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "script":
            self.n_scripts += 1
            if a.get("src"):
                self.scripts_src.append(a["src"])
        if tag == "table":
            self.tables += 1
        self._tag, self._cls = tag, a.get("class")

    def handle_data(self, data):
        if self._tag == "h2":
            self.h2.append(data.strip())
        if self._cls == "missing" and data.strip():
            self.missing.append(data.strip())


def _parse(path: Path) -> tuple[_Collect, str]:
    text = path.read_text(encoding="utf-8")
    p = _Collect()
    p.feed(text)
    p.close()
    return p, text


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_synthetic_sweep(root / "syn", n_curve_points=6)
    return root


def test_report_renders_every_figure(results, tmp_path):
    out = write_report(results, "syn", out=tmp_path / "r.html", n_boot=8).path
    p, text = _parse(out)
    for fid in FIGURES:
        assert fid in p.ids, f"figure {fid} missing"
    for sid in SECTIONS:
        assert sid in p.ids, f"section {sid} missing"
    assert len(p.h2) == len(SECTIONS)
    assert not p.scripts_src, "plotly.js must be inlined (self-contained report)"
    assert "Plotly.newPlot" in text and len(text) > 3_000_000  # the inlined plotly.js bundle
    assert not p.missing, p.missing  # all data present: no section says data are missing
    # figure titles are in the plotly JSON
    for title in ("Validation loss vs model size N", "IsoFLOP curves", "Learnable window", "SWD vs model size N",
                  "SWD vs data size D"):
        assert title in text
    # parameter table with statuses and the plain-words window explanations
    assert "converged" in text and "90% of the window is closed" in text and "learnable window" in text.lower()
    assert "Pearson r" in text and "Spearman rho" in text
    # a histogram figure (with ratio panels) per evaluated cell
    n_eval = sum(1 for r in synthetic_rows("syn") if r["status"] == "done")
    assert len([i for i in p.ids if i.startswith("fig-hist-")]) == n_eval
    assert "ratio to real" in text and "fraction of gap to E closed" in text


def test_report_sections_say_when_data_missing(tmp_path):
    root = tmp_path / "runs"
    write_synthetic_sweep(root / "noeval", n_curve_points=0, with_swd=False)
    p, text = _parse(write_report(root, "noeval", n_boot=4).path)
    assert "fig-loss-vs-n" in p.ids and "fig-swd-vs-n" not in p.ids and "fig-learning-curves" not in p.ids
    assert "fig-swd-vs-d" not in p.ids and "swd-vs-d" in p.ids
    joined = " ".join(p.missing)
    assert "No SWD data" in joined and "No learning curves" in joined
    # a sweep whose cells all failed: every analysis section explains itself, no exception
    rows = synthetic_rows("broken", seeds=1, failed=2)
    for r in rows[-2:]:
        write_cell_tables(root / "broken", r["cell_id"], r, [])
    p, _ = _parse(write_report(root, "broken", n_boot=4).path)
    assert not [i for i in p.ids if i.startswith("fig-")]
    assert len(p.missing) >= 8
    # an empty sweep folder
    (root / "empty" / "tables").mkdir(parents=True)
    p, _ = _parse(write_report(root, "empty", n_boot=4).path)
    assert any("No trials" in m for m in p.missing)


def test_cli_report(results, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert cli_main(["report", "syn", "--runs", str(results), "--out", str(out), "--n-boot", "4"]) == 0
    assert out.exists() and "report written" in capsys.readouterr().out
    assert cli_main(["report", "nosuch", "--runs", str(results)]) == 2
    assert "no sweep 'nosuch'" in capsys.readouterr().err
    rc = cli_main(["report", "syn", "--runs", str(results), "--out", str(out), "--n-boot", "2",
                   "--png", str(tmp_path / "png")])
    try:
        import kaleido  # noqa: F401

        assert rc == 0 and list((tmp_path / "png").glob("*.png"))
    except ImportError:
        err = capsys.readouterr().err
        assert rc == 2 and "kaleido" in err and "Traceback" not in err and out.exists()


BLOCKED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    BLOCKED = ("torch", "ray", "deepspeed")

    # wraps every meta-path finder so that it never finds the blocked packages: exactly what an
    # environment without them looks like (import fails, importlib.util.find_spec returns None)
    class Hide:

        def __init__(self, inner):
            self.inner = inner

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                return None
            find = getattr(self.inner, "find_spec", None)
            return find(name, path, target) if find else None

        def __getattr__(self, attr):
            return getattr(self.inner, attr)

    sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
    for m in list(sys.modules):
        if m.split(".")[0] in BLOCKED:
            del sys.modules[m]

    import numpy as np
    import analysis
    from analysis.fits import fit_law, fit_chinchilla
    from analysis.report import write_report
    from analysis.synthetic import write_synthetic_sweep
    from analysis.window import learnable_window

    root = sys.argv[1]
    write_synthetic_sweep(root + "/iso", n_curve_points=3)
    t = analysis.open(root)
    n = t.trials.collect().height
    q = analysis.query("SELECT count(*) AS n FROM curves", root)["n"][0]
    x = np.geomspace(1e4, 1e8, 8)
    r = fit_law(x, 1.5 + 30 * x ** -0.3, "offset_power", n_boot=5)
    w = learnable_window(x, 1.5 + 30 * x ** -0.3, n_boot=5)
    out = write_report(root, "iso", n_boot=3).path
    from scaling_sweeper.cli import main
    rc_query = main(["query", "SELECT count(*) AS n FROM trials", "--runs", root, "--format", "csv"])
    rc_report = main(["report", "iso", "--runs", root, "--n-boot", "2", "--out", root + "/cli.html"])
    loaded = sorted(m for m, mod in sys.modules.items() if m.split(".")[0] in BLOCKED and mod is not None)
    try:
        import torch  # noqa: F401
        loaded.append("torch importable")
    except ImportError:
        pass
    print(json.dumps({"trials": n, "curves": int(q), "status": r.status, "window": w.status,
                      "report": str(out), "loaded": loaded, "cli": [rc_query, rc_report]}))
    """
)


def test_analysis_imports_without_torch_ray_deepspeed(tmp_path):
    script = tmp_path / "blocked.py"
    script.write_text(BLOCKED_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "runs")], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["loaded"] == []
    assert res["trials"] > 50 and res["curves"] > 0
    assert res["status"] == "converged" and res["window"] == "saturating"
    assert Path(res["report"]).exists()
    assert res["cli"] == [0, 0]  # `sweeper query` / `sweeper report` work without torch


def test_frontier_points_are_the_logged_points_on_the_envelope():
    """A logged point is on the frontier when no run's curve (interpolated in log C, brute force
    here) is lower at or before its C; a run's single early point beaten later is kept only at its
    own C, and a point above another run's interpolated curve is not kept."""
    from analysis.fits.frontier import frontier_points

    rng = np.random.default_rng(3)
    curves = [(np.geomspace(s, s * 50, 6), 3 + rng.normal(0, 0.3, 6).cumsum() * 0.1 - np.arange(6) * 0.2)
              for s in (1e9, 2e9, 5e9)]
    curves.append((np.array([3e8]), np.array([9.0])))  # one early point, beaten by everything later
    C, L, who = frontier_points(curves, ["a", "b", "c", "single"])

    def lowest_before(c):  # brute force: every curve sampled densely in log10 f up to c
        best = np.inf
        for f, y in curves:
            lf = np.log10(f)
            fine = np.linspace(lf[0], lf[-1], 20001) if len(lf) > 1 else lf
            yf = np.interp(fine, lf, y) if len(lf) > 1 else y
            sel = yf[fine <= np.log10(c) + 1e-12]
            best = min(best, sel.min()) if len(sel) else best
        return best

    ref = sorted((f, y) for fs, ys in curves for f, y in zip(fs, ys) if y <= lowest_before(f) + 1e-3)
    assert np.allclose(C, [r[0] for r in ref]) and np.allclose(L, [r[1] for r in ref])
    assert who[0] == "single" and np.all(np.diff(L) <= 0)


def test_n_only_sweep_collapses_other_axes_and_prints_headline(tmp_path, capsys):
    """A sweep of 4 sizes at one D: D, isoFLOP and joint-fit sections collapse into one summary
    line; the 3-parameter law on 4 points is underdetermined (drawn as points with a note, never
    'converged'); `sweeper report` prints the headline fits; no interval is printed as a bound."""
    import re

    from analysis.synthetic import LADDER, TrueLaw, _row, curve, synthetic_eval

    rng = np.random.default_rng(0)
    sd = tmp_path / "runs" / "nonly"
    for size in LADDER[:4]:
        row, _ = _row("nonly", "model_size", size, 2e8, 2e8, 0, TrueLaw(), rng)
        ev = synthetic_eval(row, rng)
        (sd / row["cell_id"]).mkdir(parents=True)
        (sd / row["cell_id"] / "eval.json").write_text(json.dumps(ev))
        write_cell_tables(sd, row["cell_id"], row, curve(row, TrueLaw(), 5, rng),
                          [{k: v for k, v in ev.items() if k != "histograms"}])
    out = tmp_path / "n.html"
    assert cli_main(["report", "nonly", "--runs", str(tmp_path / "runs"), "--out", str(out), "--n-boot", "4"]) == 0
    printed = capsys.readouterr().out
    p, text = _parse(out)
    assert "This sweep varies N only" in text and "D = 2.000e+08" in text
    for sid in ("loss-vs-d", "swd-vs-d", "isoflop", "chinchilla"):
        assert sid not in p.ids
    assert "loss-vs-n" in p.ids and "fig-position-loss" in p.ids and len([i for i in p.ids if i.startswith("fig-hist-")]) == 4
    assert "is not drawn" in text and "4 distinct x for 3 parameters" in text
    assert "every law is rejected by its points" in text and "cannot decide" not in text  # chi2 decides first
    assert "This sweep varies N only" in printed and "underdetermined" in printed and "report written" in printed
    assert "validation loss vs N: logarithmic law" in printed
    # intervals in the HTML text never show a fit bound (alpha 5 or 0.001) as an end
    assert not re.search(r"\[[^\]]*, 5\]", text) and not re.search(r"\[0\.001,", text)


def test_histogram_panel_says_how_many_jets_fall_outside_its_range():
    """Densities are normalised to all jets, so a panel whose range leaves out a quarter of the
    generated jets must say so (counted from eval.json's under/overflow, not guessed)."""
    from analysis.physics_plots import histogram_figure

    h = {"edges": [0.0, 1.0, 2.0], "counts": {"real": [50, 50], "generated": [40, 35], "real_b": [49, 51]},
         "underflow": {"generated": 5, "real": 0}, "overflow": {"generated": 20, "real": 0}}
    fig = histogram_figure({"jet_pt": h}, "real", "t")
    texts = [a["text"] for a in fig["layout"]["annotations"]]
    assert texts == ["outside the range (shaded end bins): generated 25%"]
    h["underflow"]["generated"] = h["overflow"]["generated"] = 0
    assert histogram_figure({"jet_pt": h}, "real", "t")["layout"]["annotations"] == []


def test_position_figures_and_table_do_not_depend_on_row_order():
    """Two cells of one size and D (two seeds) tie on N and D: the figures' traces and the table's
    rows come in the same order whatever the order of the positions rows (the cell id breaks the tie),
    so the same results always give the same report."""
    from analysis.physics_plots import position_figures, position_table

    rows = [{"cell_id": cid, "size": "XXS", "N": 1000, "D": 5.0, "step": 10, "position": p,
             "loss": 2.0 + off + (p or 0), "count": 500, "baseline": 4.0 + (p or 0) + off / 3}
            for cid, off in (("a", 0.0), ("b", 0.5)) for p in (1, 2, None)]
    fwd, back = pl.DataFrame(rows), pl.DataFrame(rows[::-1])
    ys = [[list(t.y) for t in position_figures(fp)["fig-position-loss"].data] for fp in (fwd, back)]
    # the two cells' baselines differ: each is drawn (a, b), then their losses (a, b)
    assert ys[0] == ys[1] and ys[0][2] == [3.0, 4.0]  # cell "a" first
    assert position_table(fwd, None, "") == position_table(back, None, "")


def test_sections_register_in_one_table():
    """A section is one entry of analysis.report.sections.SECTIONS: its builder runs in table order,
    `needs` leaves it out, and `axes` collapses it into the summary's line (built from the data, the
    same text the terminal prints) when the sweep does not vary them."""
    from analysis.report.build import build
    from analysis.report.section import ReportData, Section, SectionDef
    from analysis.report.sections import SECTIONS

    ids = [e.id for e in SECTIONS]
    assert len(ids) == len(set(ids)) and ids[0] == "summary" and ids[-1] == "parameters"
    trials = pl.DataFrame([r for r in synthetic_rows("t", seeds=1, failed=0) if r["phase"] == "size"])
    data = ReportData.of(trials, pl.DataFrame())
    table = (SECTIONS[0],
             SectionDef("extra", lambda d, f: Section("extra", "Extra", html=f"{d.done.height} cells")),
             SectionDef("hidden", lambda d, f: Section("hidden", "Hidden"), needs=lambda d: False),
             SectionDef("along-d", lambda d, f: Section("along-d", "Along D", missing="no scan"), axes=("D",)))
    b = build(data, table)
    assert [s.id for s in b.sections] == ["summary", "extra"]
    assert b.sections[1].html == f"{trials.height} cells"
    assert b.collapsed == "This sweep varies N only (D = 2.000e+08 for every cell): left out are Along D."
    assert b.sections[0].html.startswith(f"<p class='collapsed'>{b.collapsed}</p>")
