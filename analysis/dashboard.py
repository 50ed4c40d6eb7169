"""`sweeper dashboard`: a live, read-only local web page of running and finished sweeps (Dash).

    sweeper dashboard [SWEEP ...] [--storage runs] [--port 8050] [--refresh 5]

Served on 127.0.0.1 unless --host says otherwise. It shows, per sweep, the cells by state and
the FLOPs spent against the plan and the cluster's ledger budget; the learning curves of every
cell (read from the run folders' metrics.jsonl while a cell trains, from the curves table for
sweeps without run folders); the SWD of evaluated cells with the SWD floor; the fits of the
report (`analysis.report.build_sections`, recomputed when a cell finishes); and an SQL box over
the results tables (`analysis.query`). A dcc.Interval refreshes everything every --refresh
seconds without a reload, keeping the zoom of each figure. Nothing on the page writes to the
results folder: there are no control actions.

The data functions (`sweep_views`, `live_curves`, `swd_points`) are plain functions of the
results folder; `build_app` wires them into Dash; `serve` runs the app with werkzeug.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import polars as pl
from dash import Dash, Input, Output, State, dcc, html, no_update

from analysis.dashboard_guard import HostCheck, allowed_hosts, confine_sweeps
from analysis.errors import QueryError
from analysis.query import query
from analysis.tables import Tables
from scaling_sweeper.errors import RunFolderError

STATES: tuple[str, ...] = ("done", "running", "interrupted", "pending", "failed", "refused")
STATE_COLORS = {"done": "#2ca02c", "running": "#1f77b4", "interrupted": "#ff7f0e", "pending": "#c7c7c7",
                "failed": "#d62728", "refused": "#9467bd"}
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf"]
SQL_EXAMPLE = "SELECT sweep, size, status, val_loss, swd, C FROM trials ORDER BY sweep, N"
SQL_MAX_ROWS = 200


# ---------------------------------------------------------------------------------------------
# data: plain functions of the results folder (no Dash)


@dataclass
class SweepView:
    """Where one sweep stands: cell counts by state, FLOPs, its ledger, one row per cell."""

    name: str
    counts: dict[str, int]
    C_spent: float
    C_planned: float
    cells: list[dict[str, Any]] = field(default_factory=list)
    ledger: dict[str, Any] | None = None  # cluster, budget, spent, committed, left
    live: bool = False  # the sweep's driver is running
    line: str = ""  # the one-line summary of `sweeper status`


def _table_sweeps(tables: Tables) -> list[str]:
    try:
        return tables.sweeps()
    except (pl.exceptions.PolarsError, OSError):
        return []


def list_sweep_names(root: Path) -> list[str]:
    """Sweeps under `root`: planned ones (cells.json) and ones that only have tables."""
    from scaling_sweeper.sweep.status import list_sweeps

    names = {p.name for p in list_sweeps(root)}
    names.update(_table_sweeps(Tables(str(root))))
    return sorted(names)


def _view_from_status(sweep_dir: Path) -> SweepView:
    from scaling_sweeper.sweep.status import collect, progress_line

    st = collect(sweep_dir)
    plan = {}
    try:
        plan = {r["cell_id"]: r for r in json.loads((sweep_dir / "cells.json").read_text())}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    cells = [{"cell_id": c.cell_id, "size": c.size, "D": plan.get(c.cell_id, {}).get("D"),
              "state": c.state, "step": c.step, "steps": c.steps, "C_spent": c.C_spent,
              "C_planned": c.C_planned, "val_loss": c.val_loss} for c in st.cells]
    ledger = None
    if st.ledger is not None:
        lg = st.ledger
        ledger = {"cluster": lg.cluster, "budget": lg.budget, "spent": lg.spent, "committed": lg.committed,
                  "left": lg.left}
    return SweepView(st.name, dict(st.counts), st.C_spent, st.C_planned, cells, ledger, st.driver_alive,
                     progress_line(st))


def _view_from_tables(tables: Tables, name: str) -> SweepView:
    t = tables.trials.filter(pl.col("sweep") == name).collect()
    counts = {s: 0 for s in STATES}
    cells = []
    for r in t.sort("N", "D", nulls_last=True).iter_rows(named=True):
        state = r["status"] if r["status"] in STATES else "pending"
        counts[state] += 1
        cells.append({"cell_id": r["cell_id"], "size": r["size"], "D": r["D"], "state": state,
                      "step": None, "steps": None, "C_spent": r["C_spent"] or 0.0,
                      "C_planned": r["C_planned"] or 0.0, "val_loss": r["val_loss"]})
    C_spent = math.fsum(c["C_spent"] or 0.0 for c in cells)
    C_planned = math.fsum(c["C_planned"] or 0.0 for c in cells)
    line = f"[{name}] done {counts['done']}/{len(cells)} | failed {counts['failed']} | C {C_spent:.3g} FLOPs"
    return SweepView(name, counts, C_spent, C_planned, cells, None, False, line)


def sweep_views(root: str | Path, sweeps: list[str] | None = None) -> list[SweepView]:
    """One SweepView per sweep under `root` (all of them when `sweeps` is empty): from the run
    folders when the sweep has a plan (cells.json), else from its trials table."""
    root = Path(root)
    names = sweeps or list_sweep_names(root)
    tables = Tables(str(root))
    out = []
    for name in names:
        d = root / name
        if (d / "cells.json").is_file():
            try:
                out.append(_view_from_status(d))
            except RunFolderError as e:  # a damaged plan: this sweep's tables, and why (the others still show)
                view = _view_from_tables(tables, name)
                view.line = f"{view.line} | {e}"
                out.append(view)
        else:
            out.append(_view_from_tables(tables, name))
    return out


class _JsonlCache:
    """metrics.jsonl files parsed once per (size, mtime): a refresh re-reads only files that grew."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[tuple[int, int], list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def read(self, path: Path) -> list[dict[str, Any]]:
        try:
            st = path.stat()
        except OSError:
            return []
        key = (st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._seen.get(path)
            if hit and hit[0] == key:
                return hit[1]
        from scaling_sweeper.runfolder import read_jsonl

        rows = read_jsonl(path)
        with self._lock:
            self._seen[path] = (key, rows)
        return rows


_JSONL = _JsonlCache()


def live_curves(root: str | Path, views: list[SweepView]) -> pl.DataFrame:
    """Learning curves of every cell of `views`: sweep, cell_id, size, D, state, step, flops,
    val_loss, train_loss. Planned sweeps are read from metrics.jsonl (so running cells show up
    as they log), the others from the curves table."""
    root = Path(root)
    schema = {"sweep": pl.String, "cell_id": pl.String, "size": pl.String, "D": pl.Float64, "state": pl.String,
              "step": pl.Int64, "flops": pl.Float64, "val_loss": pl.Float64, "train_loss": pl.Float64}
    frames = [pl.DataFrame(schema=schema)]
    from_tables = []
    for v in views:
        if not (root / v.name / "cells.json").is_file():
            from_tables.append(v)
            continue
        rows = []
        for c in v.cells:
            for m in _JSONL.read(root / v.name / c["cell_id"] / "metrics.jsonl"):
                rows.append({"sweep": v.name, "cell_id": c["cell_id"], "size": c["size"], "D": c["D"],
                             "state": c["state"], "step": m.get("step"), "flops": m.get("flops"),
                             "val_loss": m.get("val_loss"), "train_loss": m.get("train_loss")})
        if rows:
            frames.append(pl.DataFrame(rows, schema=schema, strict=False))
    if from_tables:
        names = [v.name for v in from_tables]
        cells = [(v.name, c) for v in from_tables for c in v.cells]
        cur = Tables(str(root)).curves.filter(pl.col("sweep").is_in(names)).collect()
        if cur.height:
            meta = pl.DataFrame({"sweep": [n for n, _ in cells], "cell_id": [c["cell_id"] for _, c in cells],
                                 "size": [c["size"] for _, c in cells],
                                 "D": [float(c["D"]) if c["D"] is not None else None for _, c in cells],
                                 "state": [c["state"] for _, c in cells]},
                                schema={"sweep": pl.String, "cell_id": pl.String, "size": pl.String,
                                        "D": pl.Float64, "state": pl.String})
            cur = cur.join(meta, on=["sweep", "cell_id"], how="left")
            frames.append(cur.select(list(schema)).cast(schema))
    return pl.concat(frames, how="vertical")


def swd_points(root: str | Path, names: list[str]) -> pl.DataFrame:
    """Evaluated cells (swd not null) of the sweeps `names` from the trials table."""
    t = Tables(str(root)).trials.filter(pl.col("sweep").is_in(names) & pl.col("swd").is_not_null())
    return t.select("sweep", "cell_id", "size", "N", "D", "C", "swd", "swd_err", "swd_floor", "val_loss").collect()


# ---------------------------------------------------------------------------------------------
# figures


def _fig(title: str, xlabel: str, ylabel: str, *, logx: bool = False, height: int = 340) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=dict(text=title, x=0.01, font=dict(size=15)), template="plotly_white", height=height,
                      margin=dict(l=60, r=20, t=40, b=45), xaxis_title=xlabel, yaxis_title=ylabel,
                      legend=dict(font=dict(size=10)), uirevision="keep")  # refreshes keep zoom
    if logx:
        fig.update_xaxes(type="log", exponentformat="power")
    return fig


def _empty(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font=dict(color="#888", size=13))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def states_figure(views: list[SweepView]) -> go.Figure:
    """Cells by state: one horizontal stacked bar per sweep."""
    fig = _fig("Cells by state", "cells", "", height=110 + 40 * max(1, len(views)))
    if not views:
        return _empty(fig, "no sweeps yet")
    names = [v.name for v in views]
    for s in STATES:
        n = [v.counts.get(s, 0) for v in views]
        if any(n):
            fig.add_bar(y=names, x=n, name=s, orientation="h", marker_color=STATE_COLORS[s], text=n,
                        textposition="inside")
    fig.update_layout(barmode="stack", legend=dict(orientation="h", y=-0.35))
    fig.update_yaxes(autorange="reversed")
    return fig


def flops_figure(views: list[SweepView]) -> go.Figure:
    """FLOPs spent as a share of each sweep's plan and of each ledger's budget (plus committed:
    admitted cells not yet spent); the bars' labels give the FLOPs."""
    fig = _fig("FLOPs spent vs plan and budget", "% of the sweep's plan / the ledger's budget", "",
               height=130 + 45 * max(1, len(views)))
    if not views:
        return _empty(fig, "no sweeps yet")
    ledgers = {v.ledger["cluster"]: v.ledger for v in views if v.ledger}
    ys = [v.name for v in views] + [f"ledger {k}" for k in ledgers]
    total = [v.C_planned for v in views] + [lg["budget"] for lg in ledgers.values()]
    spent = [v.C_spent for v in views] + [lg["spent"] for lg in ledgers.values()]
    committed = [0.0] * len(views) + [lg["committed"] for lg in ledgers.values()]

    def pct(a: float, b: float | None) -> float:
        return 100.0 * a / b if b else 0.0

    labels = [f"{s:.3g} of {t:.3g} FLOPs" if t else f"{s:.3g} FLOPs (no budget)" for s, t in zip(spent, total)]
    fig.add_bar(y=ys, x=[100.0 if t else 0.0 for t in total], name="plan / budget", orientation="h",
                marker_color="rgba(31,119,180,0.12)", marker_line=dict(color="#1f77b4", width=1), hoverinfo="skip")
    fig.add_bar(y=ys, x=[pct(s, t) for s, t in zip(spent, total)], name="spent", orientation="h",
                marker_color="#1f77b4", hovertext=labels, hoverinfo="text")
    if ledgers:
        fig.add_bar(y=ys, x=[pct(c, t) for c, t in zip(committed, total)], name="committed (admitted, not yet spent)",
                    orientation="h", marker_color="rgba(255,127,14,0.6)", base=[pct(s, t) for s, t in zip(spent, total)])
    for y, lab in zip(ys, labels):
        fig.add_annotation(y=y, x=100, text=lab, showarrow=False, xanchor="right", font=dict(size=11, color="#333"))
    fig.update_layout(barmode="overlay", legend=dict(orientation="h", y=-0.3))
    fig.update_xaxes(range=[0, 101], ticksuffix="%")
    fig.update_yaxes(autorange="reversed")
    return fig


def _label(r: dict[str, Any], multi: bool) -> str:
    d = f" D={r['D']:.2g}" if r.get("D") else ""
    return (f"{r['sweep']} · " if multi else "") + f"{r['size']}{d}"


def curves_figure(curves: pl.DataFrame) -> go.Figure:
    """Validation loss vs FLOPs per cell; cells still training end in a marker."""
    fig = _fig("Learning curves (validation loss)", "C (FLOPs)", "validation loss (nats/token)", logx=True,
               height=420)
    d = curves.filter(pl.col("val_loss").is_not_null() & pl.col("flops").is_not_null() & (pl.col("flops") > 0))
    if d.height == 0:
        return _empty(fig, "no validation losses logged yet")
    multi = d["sweep"].n_unique() > 1
    keys = d.select("sweep", "cell_id", "size", "D", "state").unique(maintain_order=True)
    order = keys.sort("sweep", "D", "size", nulls_last=True).iter_rows(named=True)
    for i, k in enumerate(order):
        c = d.filter((pl.col("sweep") == k["sweep"]) & (pl.col("cell_id") == k["cell_id"])).sort("step")
        running = k["state"] == "running"
        fig.add_scatter(x=c["flops"].to_list(), y=c["val_loss"].to_list(), mode="lines+markers" if running else "lines",
                        name=_label(k, multi) + (" (running)" if running else ""),
                        line=dict(color=COLORS[i % len(COLORS)], width=2, dash="dot" if running else "solid"),
                        marker=dict(size=[0] * (c.height - 1) + [9]),
                        customdata=[[k["cell_id"], k["state"]]] * c.height,
                        hovertemplate="cell %{customdata[0]} (%{customdata[1]})<br>C %{x:.3g}<br>"
                                      "val loss %{y:.4f}<extra></extra>")
    return fig


def swd_figure(pts: pl.DataFrame) -> go.Figure:
    """SWD (with bootstrap error) of evaluated cells vs compute, with the SWD floor."""
    fig = _fig("SWD of evaluated cells", "C (FLOPs)", "SWD (generated vs real jets)", logx=True, height=420)
    if pts.height == 0:
        return _empty(fig, "no evaluated cell yet (swd appears when a cell's evaluation finishes)")
    multi = pts["sweep"].n_unique() > 1
    for i, (key, g) in enumerate(pts.sort("sweep", "C").group_by("sweep", maintain_order=True)):
        fig.add_scatter(x=g["C"].to_list(), y=g["swd"].to_list(), mode="markers", name=str(key[0]),
                        error_y=dict(type="data", array=g["swd_err"].fill_null(0).to_list(), visible=True),
                        marker=dict(size=9, color=COLORS[i % len(COLORS)]),
                        text=[_label(r, multi) for r in g.iter_rows(named=True)],
                        hovertemplate="%{text}<br>C %{x:.3g}<br>SWD %{y:.3f}<extra></extra>")
    floor = pts["swd_floor"].drop_nulls()
    if floor.len():
        fig.add_hline(y=float(floor.mean()), line=dict(color="#555", dash="dash"),
                      annotation_text=f"floor {float(floor.mean()):.3f} (real vs real)",
                      annotation_position="bottom right")
    return fig


# ---------------------------------------------------------------------------------------------
# page pieces


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 100_000:
        return f"{v:.3g}"
    return str(v)


def _table(df: pl.DataFrame, max_rows: int = SQL_MAX_ROWS, table_id: str | None = None) -> html.Table:
    head = html.Thead(html.Tr([html.Th(c) for c in df.columns]))
    body = html.Tbody([html.Tr([html.Td(_fmt(v)) for v in row]) for row in df.head(max_rows).iter_rows()])
    kw = {"id": table_id} if table_id else {}
    return html.Table([head, body], className="grid", **kw)


def cells_table(views: list[SweepView]) -> html.Table:
    rows = [{"sweep": v.name, **c} for v in views for c in v.cells]
    cols = ["sweep", "cell_id", "size", "D", "state", "step", "steps", "C_spent", "C_planned", "val_loss"]
    head = html.Thead(html.Tr([html.Th(c) for c in cols]))
    body = [html.Tr([html.Td(_fmt(r[c]), className=f"state-{r['state']}" if c == "state" else None) for c in cols])
            for r in rows]
    return html.Table([head, html.Tbody(body)], className="grid", id="cells-grid")


def summary_lines(views: list[SweepView]) -> list[html.Div]:
    out = []
    for v in views:
        badge = html.Span("running" if v.live else "idle", className="badge live" if v.live else "badge")
        out.append(html.Div([badge, html.Code(v.line)], className="summary"))
    return out


def _signature(views: list[SweepView], curves: pl.DataFrame, pts: pl.DataFrame, names: list[str]) -> str:
    """A short string that changes whenever anything the live figures show changes."""
    cells = [[v.name, v.live, v.ledger, [[c["cell_id"], c["state"], c["step"], c["val_loss"]] for c in v.cells]]
             for v in views]
    last = curves.select(pl.len(), pl.col("flops").sum(), pl.col("val_loss").sum()).row(0)
    return hashlib.sha1(json.dumps([cells, last, pts.height, names], default=str).encode()).hexdigest()


FIT_LAYOUT = dict(uirevision="keep", height=460, margin=dict(l=60, r=20, t=50, b=40),
                  legend=dict(orientation="h", yanchor="top", y=-0.18, font=dict(size=10)))


class _FitsCache:
    """The report's sections per sweep, rebuilt only when the sweep's finished cells change.
    Kept as plain dicts (figures serialized once), so concurrent callbacks never share a
    plotly Figure object."""

    def __init__(self, n_boot: int) -> None:
        self.n_boot = n_boot
        self._cache: dict[str, tuple[Any, list[Any]]] = {}
        self._lock = threading.Lock()

    def sections(self, root: Path, sweep: str) -> tuple[Any, list[Any]]:
        """(key, sections): key changes when the sweep's finished cells do."""
        from analysis.report import build_sections

        tables = Tables(str(root), sweep)
        trials = tables.trials.collect()
        done = trials.filter(pl.col("status") == "done")
        key = (done.height, float(done["written_at"].max() or 0.0) if done.height else 0.0)
        with self._lock:
            hit = self._cache.get(sweep)
            if hit and hit[0] == key:
                return hit
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                secs, _, _ = build_sections(trials, tables.curves.collect(), sweep, self.n_boot,
                                            tables.evals.collect(), tables.positions.collect())
            plain = []
            for sec in secs:
                if sec.id == "summary":
                    continue
                figs = [(fid, fig if isinstance(fig, dict) else fig.update_layout(**FIT_LAYOUT).to_dict())
                        for fid, fig in sec.figures.items()]
                plain.append({"title": sec.title, "missing": sec.missing, "figures": figs, "html": sec.html})
            self._cache[sweep] = (key, plain)
            return key, plain


CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 0; background: #f6f7f9; color: #222; }
header { background: #1f2d3d; color: #fff; padding: 10px 20px; display: flex; align-items: baseline; gap: 18px; }
header h1 { font-size: 19px; margin: 0; }
header .where { font-family: monospace; font-size: 13px; opacity: .85; }
header .updated { margin-left: auto; font-size: 12px; opacity: .8; }
main { padding: 12px 20px; }
.row { display: flex; gap: 12px; flex-wrap: wrap; }
.card { background: #fff; border: 1px solid #e1e4e8; border-radius: 6px; padding: 8px 10px; margin-bottom: 12px;
        flex: 1 1 480px; min-width: 0; }
.card h2 { font-size: 15px; margin: 4px 2px 8px; }
.summary { font-size: 12.5px; margin: 3px 0; }
.badge { display: inline-block; min-width: 54px; text-align: center; font-size: 11px; border-radius: 8px;
         padding: 1px 6px; margin-right: 8px; background: #ddd; color: #333; }
.badge.live { background: #1f77b4; color: #fff; }
table.grid { border-collapse: collapse; font-size: 12px; width: 100%; }
table.grid th { text-align: left; background: #f0f2f5; position: sticky; top: 0; }
table.grid th, table.grid td { padding: 3px 7px; border-bottom: 1px solid #eee; font-family: monospace; }
.scroll { max-height: 320px; overflow: auto; }
.state-done { color: #2ca02c; } .state-running { color: #1f77b4; font-weight: bold; }
.state-failed { color: #d62728; } .state-interrupted { color: #ff7f0e; } .state-pending { color: #888; }
textarea.sql { width: 100%; font-family: monospace; font-size: 13px; }
.error { color: #d62728; font-family: monospace; font-size: 13px; }
.note { color: #666; font-size: 12px; }
.fit-text { font-size: 13px; }
.card.fit { flex: 1 1 600px; } .card.fit h3 { font-size: 14px; margin: 4px 2px; }
"""


def build_app(root: str | Path, sweeps: list[str] | None = None, *, refresh_s: float = 5.0,
              n_boot: int = 50) -> Dash:
    """The Dash app over the results folder `root` (read-only). sweeps: the sweeps to show
    (None: every sweep under root, including ones that appear later)."""
    root = Path(root)
    fits = _FitsCache(n_boot)
    app = Dash(__name__, title="sweeper dashboard", update_title=None)
    app.index_string = app.index_string.replace("{%css%}", "{%css%}<style>" + CSS + "</style>")
    initial = sweeps or list_sweep_names(root)

    app.layout = html.Div([
        html.Header([html.H1("scaling-sweeper"), html.Span(str(root.resolve()), className="where"),
                     html.Span(id="updated", className="updated")]),
        html.Main([
            dcc.Interval(id="tick", interval=int(refresh_s * 1000), n_intervals=0),
            dcc.Store(id="seen"), dcc.Store(id="fits-seen"),  # what this page shows: unchanged data is not resent
            html.Div([
                html.Div([html.H2("Sweeps"),
                          dcc.Dropdown(id="sweeps", options=initial, value=list(sweeps or []), multi=True,
                                       placeholder="all sweeps"),
                          html.Div(id="summary", style={"marginTop": "8px"})], className="card"),
            ], className="row"),
            html.Div([
                html.Div(dcc.Graph(id="states", config={"displaylogo": False}), className="card"),
                html.Div(dcc.Graph(id="flops", config={"displaylogo": False}), className="card"),
            ], className="row"),
            html.Div([
                html.Div(dcc.Graph(id="curves", config={"displaylogo": False}), className="card"),
                html.Div(dcc.Graph(id="swd", config={"displaylogo": False}), className="card"),
            ], className="row"),
            html.Div([html.Div([html.H2("Cells"), html.Div(id="cells", className="scroll")], className="card")],
                     className="row"),
            html.Div([html.Div([
                html.H2("SQL (polars SQL over trials, curves, evals; read-only)"),
                dcc.Textarea(id="sql", value=SQL_EXAMPLE, className="sql", rows=3),
                html.Button("Run", id="run-sql", n_clicks=0),
                html.Span(" the query runs again at every refresh", className="note"),
                html.Div(id="sql-result", className="scroll"),
            ], className="card")], className="row"),
            html.Div([html.Div([
                html.H2("Fits of the report"),
                dcc.Dropdown(id="fit-sweep", options=initial, value=initial[0] if initial else None, clearable=False),
                html.P("recomputed when a cell of the sweep finishes; the same fits as `sweeper report` "
                       f"(bootstrap resamples here: {n_boot})", className="note"),
                dcc.Loading(html.Div(id="fits")),
            ], className="card")], className="row"),
        ]),
    ])

    def _names(selected: list[str] | None) -> list[str]:
        # names come from the browser: only plain sweep folders inside root (dashboard_guard)
        return confine_sweeps(root, selected) if selected else (sweeps or list_sweep_names(root))

    @app.callback(
        Output("summary", "children"), Output("states", "figure"), Output("flops", "figure"),
        Output("curves", "figure"), Output("swd", "figure"), Output("cells", "children"),
        Output("updated", "children"), Output("sweeps", "options"), Output("fit-sweep", "options"),
        Output("seen", "data"),
        Input("tick", "n_intervals"), Input("sweeps", "value"), State("seen", "data"),
    )
    def refresh(_n: int, selected: list[str] | None, seen: str | None):
        names = _names(selected)
        views = sweep_views(root, names)
        curves = live_curves(root, views)
        pts = swd_points(root, names)
        all_names = sweeps or list_sweep_names(root)
        stamp = "updated " + time.strftime("%H:%M:%S") + f" · every {refresh_s:g} s"
        sig = _signature(views, curves, pts, all_names)
        if sig == seen:  # nothing new: only the time stamp changes
            return (no_update,) * 6 + (stamp, no_update, no_update, no_update)
        return (summary_lines(views), states_figure(views), flops_figure(views), curves_figure(curves),
                swd_figure(pts), cells_table(views), stamp, all_names, all_names, sig)

    @app.callback(Output("sql-result", "children"), Input("run-sql", "n_clicks"), Input("tick", "n_intervals"),
                  State("sql", "value"))
    def run_sql(_clicks: int, _n: int, sql: str | None):
        if not sql or not sql.strip():
            return html.Div("type a statement, e.g. " + SQL_EXAMPLE, className="note")
        try:
            df = query(sql.strip().rstrip(";"), Tables(str(root)), allow_files=False)
        except QueryError as e:
            return html.Div("error: " + str(e).splitlines()[0], className="error")
        note = html.Div(f"{df.height} rows" + (f" (first {SQL_MAX_ROWS} shown)" if df.height > SQL_MAX_ROWS else ""),
                        className="note")
        return [note, _table(df)]

    @app.callback(Output("fits", "children"), Output("fits-seen", "data"), Input("fit-sweep", "value"),
                  Input("tick", "n_intervals"), State("fits-seen", "data"))
    def show_fits(sweep: str | None, _n: int, seen: str | None):
        if not sweep:
            return html.Div("no sweep yet", className="note"), None
        if not confine_sweeps(root, [sweep]):  # from the browser: a folder inside root only
            return html.Div("no such sweep", className="note"), None
        key, secs = fits.sections(root, sweep)
        sig = json.dumps([sweep, key])
        if sig == seen:
            return no_update, no_update
        out = []
        for sec in secs:
            body: list[Any] = [html.H3(sec["title"])]
            if sec["missing"]:
                body.append(html.P(sec["missing"], className="note"))
            for fid, fig in sec["figures"]:
                body.append(dcc.Graph(id=f"fit-{fid}", figure=fig, config={"displaylogo": False}))
            if sec["html"]:
                body.append(dcc.Markdown(sec["html"], dangerously_allow_html=True, className="fit-text"))
            out.append(html.Div(body, className="card fit"))
        return html.Div(out, className="row"), sig

    return app


def serve(root: str | Path, sweeps: list[str] | None = None, *, host: str = "127.0.0.1", port: int = 8050,
          refresh_s: float = 5.0, n_boot: int = 50) -> None:
    """Run the dashboard until Ctrl-C; prints its URL (port 0 picks a free port)."""
    from werkzeug.serving import make_server

    app = build_app(root, sweeps, refresh_s=refresh_s, n_boot=n_boot)
    srv = make_server(host, port, app.server, threaded=True)
    app.server.wsgi_app = HostCheck(app.server.wsgi_app, allowed_hosts(host, srv.port))  # DNS rebinding
    print(f"dashboard of {root} on http://{host}:{srv.port}/ (Ctrl-C to stop)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {host}: anyone who can reach this machine can read the results", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
