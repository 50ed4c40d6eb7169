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

This module is the Dash wiring only: the data are plain functions of the results folder
(analysis/sweep_views.py: `sweep_views`, `live_curves`, `swd_points`), the figures plain functions
of those (analysis/sweep_figures.py); `page_layout` is the page, `build_app` adds the callbacks,
`serve` runs the app with werkzeug.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import polars as pl
from dash import Dash, Input, Output, State, dcc, html, no_update

from analysis.dashboard_guard import HostCheck, allowed_hosts, confine_sweeps
from analysis.errors import QueryError
from analysis.query import query
from analysis.sweep_figures import curves_figure, flops_figure, states_figure, swd_figure
from analysis.sweep_views import SweepView, list_sweep_names, live_curves, swd_points, sweep_views
from analysis.tables import Tables

SQL_EXAMPLE = "SELECT sweep, size, status, val_loss, swd, C FROM trials ORDER BY sweep, N"
SQL_MAX_ROWS = 200


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


def page_layout(root: Path, sweeps: list[str] | None, initial: list[str], refresh_s: float,
                n_boot: int) -> html.Div:
    """The page: sweep picker and summary, state and FLOPs bars, curves and SWD, cells, SQL, fits."""
    return html.Div([
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


def sql_result(sql: str | None, root: Path) -> Any:
    """The SQL box's answer: a table of the first rows, or the error's first line."""
    if not sql or not sql.strip():
        return html.Div("type a statement, e.g. " + SQL_EXAMPLE, className="note")
    try:
        df = query(sql.strip().rstrip(";"), Tables(str(root)), allow_files=False)
    except QueryError as e:
        return html.Div("error: " + str(e).splitlines()[0], className="error")
    note = html.Div(f"{df.height} rows" + (f" (first {SQL_MAX_ROWS} shown)" if df.height > SQL_MAX_ROWS else ""),
                    className="note")
    return [note, _table(df)]


def fit_cards(secs: list[dict[str, Any]]) -> html.Div:
    """One card per report section (as _FitsCache keeps them): title, missing note, figures, text."""
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
    return html.Div(out, className="row")


def build_app(root: str | Path, sweeps: list[str] | None = None, *, refresh_s: float = 5.0,
              n_boot: int = 50) -> Dash:
    """The Dash app over the results folder `root` (read-only). sweeps: the sweeps to show
    (None: every sweep under root, including ones that appear later)."""
    root = Path(root)
    fits = _FitsCache(n_boot)
    app = Dash(__name__, title="sweeper dashboard", update_title=None)
    app.index_string = app.index_string.replace("{%css%}", "{%css%}<style>" + CSS + "</style>")
    app.layout = page_layout(root, sweeps, sweeps or list_sweep_names(root), refresh_s, n_boot)

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
        return sql_result(sql, root)

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
        return fit_cards(secs), sig

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
