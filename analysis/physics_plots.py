"""The physics figures of the report: generated-vs-real histograms with ratio panels (from the
histograms eval.json stores) and the validation loss per constituent position against the
zero-parameter unigram baseline (from the `positions` table). Pure: frames and dicts in,
plotly figures and HTML out; reading eval.json files is the one I/O helper (`load_histograms`).
"""

from __future__ import annotations

import functools
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl

from analysis.fits.result import fmt_num, format_interval

#: observables drawn, in order, with axis labels (units)
HIST_OBSERVABLES: dict[str, str] = {
    "jet_pt": "jet p<sub>T</sub> [GeV]",
    "jet_mass": "jet mass [GeV]",
    "n_constituents": "number of constituents",
    "tau21": "τ<sub>21</sub>",
    "tau32": "τ<sub>32</sub>",
    "d2": "D<sub>2</sub>",
}
RATIO_RANGE = (0.0, 2.0)
MIN_POSITION_JETS = 20  # positions with fewer validation jets are left out of the per-position plots


def load_histograms(sweep_dir: Path, cell_ids: list[str]) -> dict[str, dict[str, Any]]:
    """{cell_id: {"histograms": ..., "reference": ..., "config": ...}} from each run folder's eval.json."""
    out = {}
    for cid in cell_ids:
        p = Path(sweep_dir) / cid / "eval.json"
        try:
            ev = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(ev, dict) and isinstance(ev.get("histograms"), dict) and ev["histograms"]:
            out[cid] = {"histograms": ev["histograms"], "reference": ev.get("reference", "tokenized"),
                        "config": ev.get("config") if isinstance(ev.get("config"), dict) else None}
    return out


def _density(h: dict[str, Any], label: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(density, its Poisson error) per bin, normalised to all jets of the sample (incl. under/overflow)."""
    c = h.get("counts", {}).get(label)
    if c is None:
        return None
    c = np.asarray(c, float)
    tot = c.sum() + _out_of_range(h, label)
    w = np.diff(np.asarray(h["edges"], float))
    if tot <= 0:
        return None
    return c / (tot * w), np.sqrt(c) / (tot * w)


MAX_BINS = 40  # finer stored histograms are merged (whole bins, so integer edges stay integer)


def panel_bins(h: dict[str, Any], max_bins: int = MAX_BINS) -> tuple[dict[str, Any], bool]:
    """The histogram as drawn: adjacent bins merged k at a time (k = ceil(bins / max_bins); the
    merged edges are a subset of the stored ones, so a histogram of integers keeps integer edges and
    every merged bin holds the same number of integers), then, when any sample has jets outside the
    range, one underflow and one overflow bin of the edge bins' widths added at the ends (their
    counts moved into them, so the densities still sum with the in-range bins to all jets).
    Returns (histogram, whether flow bins were added)."""
    edges = np.asarray(h["edges"], float)
    counts = {k: np.asarray(v, float) for k, v in h.get("counts", {}).items()}
    n = len(edges) - 1
    k = max(1, math.ceil(n / max_bins))
    if k > 1:
        idx = np.arange(0, n, k)
        edges = np.append(edges[idx], edges[-1])
        counts = {lab: np.add.reduceat(c, idx) for lab, c in counts.items()}
    under, over = h.get("underflow", {}), h.get("overflow", {})
    flow = any(under.get(lab, 0) or over.get(lab, 0) for lab in counts)
    if flow:
        w0, w1 = edges[1] - edges[0], edges[-1] - edges[-2]
        edges = np.concatenate([[edges[0] - w0], edges, [edges[-1] + w1]])
        counts = {lab: np.concatenate([[under.get(lab, 0)], c, [over.get(lab, 0)]]) for lab, c in counts.items()}
    out = {"edges": edges.tolist(), "counts": {lab: c.tolist() for lab, c in counts.items()},
           "underflow": {}, "overflow": {}}
    return out, flow


def _ratio(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(b[0] > 0, a[0] / b[0], np.nan)
        e = r * np.sqrt(np.where(a[0] > 0, (a[1] / a[0]) ** 2, 0) + np.where(b[0] > 0, (b[1] / b[0]) ** 2, 0))
    return r, e


def _steps(edges: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.repeat(edges, 2)[1:-1], np.repeat(y, 2)


def _ax(k: int) -> tuple[str, str]:
    """(trace reference, layout key) of axis number k: ("x", "xaxis") for 1, ("x3", "xaxis3") ..."""
    return ("" if k == 1 else str(k)), ("" if k == 1 else str(k))


def histogram_figure(hists: dict[str, Any], reference: str, title: str) -> dict[str, Any] | None:
    """Generated vs real histograms (density) of up to six observables, each with a ratio panel
    generated / real below it; the second real sample / real shows the statistical scatter.

    Returned as a plain plotly figure dict (rendered without plotly's per-property validation,
    which costs seconds per 12-panel figure and a sweep has one per evaluated cell)."""
    names = [n for n in HIST_OBSERVABLES if n in hists and hists[n].get("edges")]
    if not names:
        return None
    ref_label = "real_tokenized" if reference == "tokenized" and any(
        "real_tokenized" in hists[n].get("counts", {}) for n in names) else "real"
    ref_name = "real jets, tokenized" if ref_label == "real_tokenized" else "real jets"
    ncol = 3
    nband = math.ceil(len(names) / ncol)
    data: list[dict[str, Any]] = []
    layout: dict[str, Any] = {
        "title": {"text": title}, "template": _template(), "height": 330 * nband + 130,
        "legend": {"orientation": "h", "yanchor": "top", "y": -0.1 if nband == 1 else -0.06, "x": 0,
                   "font": {"size": 12}},
        "margin": {"l": 60, "r": 20, "t": 60, "b": 40}}
    gap_x, band_gap = 0.06, 0.09
    annotations: list[dict[str, Any]] = []
    band_h = (1.0 - band_gap * (nband - 1)) / nband
    for i, name in enumerate(names):
        h_stored = hists[name]
        h, flow = panel_bins(h_stored)
        band, col = i // ncol, i % ncol
        kh, kr = 2 * i + 1, 2 * i + 2
        (th, lh), (tr, lr) = _ax(kh), _ax(kr)
        x0 = col / ncol + (gap_x / 2 if col else 0.0)
        x1 = (col + 1) / ncol - (gap_x / 2 if col < ncol - 1 else 0.0)
        top = 1.0 - band * (band_h + band_gap)
        split = top - 0.68 * band_h
        edges = np.asarray(h["edges"], float)
        rng = [float(edges[0]), float(edges[-1])]
        layout[f"xaxis{lh}"] = {"domain": [x0, x1], "anchor": f"y{th}", "range": rng, "showticklabels": False,
                                "matches": f"x{tr}"}
        layout[f"yaxis{lh}"] = {"domain": [split + 0.01, top], "anchor": f"x{th}", "rangemode": "tozero",
                                "title": {"text": "1/N dN/dx"} if col == 0 else None}
        layout[f"xaxis{lr}"] = {"domain": [x0, x1], "anchor": f"y{tr}", "range": rng,
                                "title": {"text": HIST_OBSERVABLES[name], "standoff": 2}}
        layout[f"yaxis{lr}"] = {"domain": [top - band_h, split - 0.01], "anchor": f"x{tr}", "range": list(RATIO_RANGE),
                                "title": {"text": "ratio to real"} if col == 0 else None}
        ref, gen, rb = _density(h, ref_label), _density(h, "generated"), _density(h, "real_b")
        first = i == 0
        on_h = {"xaxis": f"x{th}", "yaxis": f"y{th}"}
        on_r = {"xaxis": f"x{tr}", "yaxis": f"y{tr}"}
        if ref is not None:
            x, y = _steps(edges, ref[0])
            data.append({"type": "scatter", "x": x.tolist(), "y": y.tolist(), "mode": "lines", "fill": "tozeroy",
                         "line": {"color": "#888", "width": 1}, "fillcolor": "rgba(150,150,150,0.35)",
                         "name": ref_name, "legendgroup": "ref", "showlegend": first, **on_h})
        if gen is not None:
            x, y = _steps(edges, gen[0])
            data.append({"type": "scatter", "x": x.tolist(), "y": y.tolist(), "mode": "lines",
                         "line": {"color": "#d62728", "width": 2}, "name": "generated jets", "legendgroup": "gen",
                         "showlegend": first, **on_h})
        centers = (0.5 * (edges[1:] + edges[:-1])).tolist()
        data.append({"type": "scatter", "x": rng, "y": [1.0, 1.0], "mode": "lines", "hoverinfo": "skip",
                     "line": {"color": "black", "width": 1, "dash": "dot"}, "showlegend": False, **on_r})
        for a, color, size, label, grp in ((rb, "#888", 4, "second real sample / real (statistical scatter)", "rb"),
                                           (gen, "#d62728", 5, "generated / real", "gr")):
            if ref is None or a is None:
                continue
            r, e = _ratio(a, ref)
            data.append({"type": "scatter", "x": centers, "y": _nan_none(r), "mode": "markers",
                         "marker": {"color": color, "size": size},
                         "error_y": {"type": "data", "array": _nan_none(e), "thickness": 1, "width": 0},
                         "name": label, "legendgroup": grp, "showlegend": first, **on_r})
            data += _clipped_markers(np.asarray(centers), r, color, first, on_r)
        if flow:  # the end bins hold the jets outside the stored range: shade them
            for lo_e, hi_e in ((edges[0], edges[1]), (edges[-2], edges[-1])):
                for ax_t in (th, tr):
                    layout.setdefault("shapes", []).append(
                        {"type": "rect", "xref": f"x{ax_t}", "yref": f"y{ax_t} domain", "x0": float(lo_e),
                         "x1": float(hi_e), "y0": 0, "y1": 1, "fillcolor": "rgba(120,120,120,0.12)", "line": {"width": 0},
                         "layer": "below"})
        out = [f"{who} {f:.0%}" for who, f in (("generated", _outside(h_stored, "generated")),
                                               ("real", _outside(h_stored, ref_label)))
               if f is not None and f >= 0.01]
        if out:  # jets the stored range leaves out: drawn in the shaded under/overflow bins
            annotations.append({"text": "outside the range (shaded end bins): " + ", ".join(out), "showarrow": False,
                                "xref": f"x{th} domain", "yref": f"y{th} domain", "x": 1.0, "y": 1.0,
                                "xanchor": "right", "yanchor": "bottom", "font": {"size": 10, "color": "#555"}})
    layout["annotations"] = annotations
    return {"data": data, "layout": layout}


def _clipped_markers(x: np.ndarray, r: np.ndarray, color: str, first: bool, on: dict[str, str]) -> list[dict[str, Any]]:
    """Ratios beyond the panel's range, drawn as triangles at its edge (pointing the way they left)."""
    lo, hi = RATIO_RANGE
    out = []
    for m, y, sym in ((r > hi, hi - 0.04 * (hi - lo), "triangle-up"), (r < lo, lo + 0.04 * (hi - lo), "triangle-down")):
        m = m & np.isfinite(r)
        if m.any():
            out.append({"type": "scatter", "x": x[m].tolist(), "y": [y] * int(m.sum()), "mode": "markers",
                        "marker": {"color": color, "size": 8, "symbol": sym},
                        "text": [f"ratio {v:.3g}" for v in r[m]], "name": "ratio beyond the panel (at its edge)",
                        "legendgroup": "clipped", "showlegend": first, **on})
    return out


def _outside(h: dict[str, Any], label: str) -> float | None:
    """Share of a sample's jets outside the histogram's range (under- plus overflow)."""
    c = h.get("counts", {}).get(label)
    if c is None:
        return None
    out = _out_of_range(h, label)
    tot = float(np.sum(c)) + out
    return out / tot if tot > 0 else None


def _out_of_range(h: dict[str, Any], label: str) -> int:
    """Jets of a sample below plus above the histogram's range."""
    return h.get("underflow", {}).get(label, 0) + h.get("overflow", {}).get(label, 0)


@functools.lru_cache(maxsize=1)
def _template() -> dict[str, Any]:
    """plotly_white as a plain dict (a figure dict rendered without validation needs it resolved)."""
    import plotly.io as pio

    return pio.templates["plotly_white"].to_plotly_json()


def value_pm(v: float | None, e: float | None) -> str:
    """'0.130 ± 0.004': the error to 2 significant digits, the value to the same decimal place."""
    if v is None or not math.isfinite(v):
        return "n/a"
    if e is None or not math.isfinite(e) or e <= 0:
        return fmt_num(v)
    d = max(0, 1 - int(math.floor(math.log10(e))))
    return f"{v:.{d}f} ± {e:.{d}f}" if d <= 8 else f"{fmt_num(v)} ± {fmt_num(e)}"


def _nan_none(v: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(x) else float(x) for x in v]


# ---------------------------------------------------------------------------------------------
# loss per constituent position


#: what each kind of unigram baseline is (positions.baseline_kind): (short name, what it means)
BASELINE_KINDS: dict[str, tuple[str, str]] = {
    "held_out": ("held out", "the per-position unigram model (no parameters) fitted on the cell's own training "
                 "rows (the rows its steps visit) and scored on the same validation jets as the model, with "
                 "add-α smoothing for tokens unseen in training (α chosen by leave-one-out on those training rows)"),
    "in_sample": ("in-sample", "the per-position unigram model's Miller-Madow corrected entropy on up to 50,000 "
                  "training jets (more than most cells saw), not a loss on the validation jets: it sits below what "
                  "a held-out unigram model scores, so gains over it are understated (cells trained before the "
                  "held-out baseline)"),
}


def with_baseline_kind(positions: pl.DataFrame) -> pl.DataFrame:
    """positions with `baseline_kind` filled: tables written before the column existed hold the
    in-sample baseline, so a baseline without a kind is in_sample (null where there is no baseline)."""
    if "baseline" not in positions.columns:
        return positions.with_columns(pl.lit(None, pl.String).alias("baseline_kind"))
    kind = pl.col("baseline_kind") if "baseline_kind" in positions.columns else pl.lit(None, pl.String)
    return positions.with_columns(
        pl.when(pl.col("baseline").is_null()).then(kind)
        .otherwise(pl.coalesce(kind, pl.lit("in_sample"))).alias("baseline_kind"))


def baseline_note(kinds: set[str], names: dict[str, list[str]] | None = None) -> str:
    """What the baseline is, for the kinds present; with both, which cells have which
    (names: kind -> cell labels)."""
    kinds = {k for k in kinds if k in BASELINE_KINDS}
    if not kinds:
        return ""
    if len(kinds) == 1:
        k = next(iter(kinds))
        return f"The unigram baseline is {BASELINE_KINDS[k][0]}: {BASELINE_KINDS[k][1]}."
    parts = []
    for k in ("held_out", "in_sample"):
        who = f" ({', '.join(names[k])})" if names and names.get(k) else ""
        parts.append(f"{BASELINE_KINDS[k][0]}{who}: {BASELINE_KINDS[k][1]}")
    return "These cells carry two kinds of unigram baseline, not comparable with each other: " + "; ".join(parts) + "."


def final_positions(positions: pl.DataFrame, cells: pl.DataFrame) -> pl.DataFrame:
    """Each cell's last evaluation from the positions table, joined with size, N, D (baseline_kind
    filled, `with_baseline_kind`)."""
    if positions.height == 0 or cells.height == 0:
        return with_baseline_kind(positions.clear())
    last = positions.group_by("cell_id").agg(pl.col("step").max().alias("_last"))
    p = positions.join(last, on="cell_id").filter(pl.col("step") == pl.col("_last")).drop("_last")
    keep = [c for c in ("cell_id", "size", "N", "D", "val_loss") if c in cells.columns]
    return with_baseline_kind(p.join(cells.select(keep), on="cell_id", how="inner"))


def _label(row: dict[str, Any], several_d: bool) -> str:
    return f"{row.get('size')}" + (f", D = {fmt_num(float(row['D']))}" if several_d and row.get("D") is not None else "")


def position_figures(fp: pl.DataFrame, colors: tuple[str, dict] | None = None) -> dict[str, go.Figure]:
    """Loss per constituent position per cell with the unigram baseline, and the gain over it."""
    d = fp.filter(pl.col("position").is_not_null() & (pl.col("count") >= MIN_POSITION_JETS))
    if d.height == 0:
        return {}
    several_d = d["D"].n_unique() > 1 if "D" in d.columns else False
    # cell_id breaks ties (two seeds of one size and D): the same results give the same figure
    cells = d.select("cell_id", "size", "N", "D").unique().sort(["N", "D", "cell_id"], nulls_last=True)
    ramp = _ramp(cells.height)
    # colours: the report's one colour per sweep value (column, {value: colour}) when given
    colour = [colors[1].get(r[colors[0]], ramp[i]) if colors else ramp[i] for i, r in enumerate(cells.iter_rows(named=True))]
    f1, f2 = go.Figure(), go.Figure()
    d = with_baseline_kind(d)
    # the baseline is the cell's own (its training rows): one dashed line where every cell has the
    # same one (e.g. a size scan on one D), else one per cell in its colour
    curves = {r["cell_id"]: _baseline_curve(d.filter(pl.col("cell_id") == r["cell_id"])) for r in cells.iter_rows(named=True)}
    shared = len({(c[0], str(c[1]), c[2]) for c in curves.values()}) == 1
    for i, row in enumerate(cells.iter_rows(named=True) if not shared else [next(cells.iter_rows(named=True))]):
        x, y, kind = curves[row["cell_id"]]
        if all(not math.isfinite(v) for v in y):
            continue
        what = BASELINE_KINDS.get(kind, ("", ""))[0]
        f1.add_trace(go.Scatter(x=list(x), y=_nan_none(np.array(y)), mode="lines",
                                line={"color": "black" if shared else colour[i], "dash": "dash"},
                                name=(f"unigram baseline ({what}, 0 parameters)" if shared else
                                      f"{_label(row, several_d)}: its unigram baseline ({what})")))
    for i, row in enumerate(cells.iter_rows(named=True)):
        g = d.filter(pl.col("cell_id") == row["cell_id"]).sort("position")
        name = _label(row, several_d)
        f1.add_trace(go.Scatter(x=g["position"], y=g["loss"], mode="lines", line={"color": colour[i]}, name=name))
        f2.add_trace(go.Scatter(x=g["position"], y=g["baseline"] - g["loss"], mode="lines", line={"color": colour[i]},
                                name=name))
    f2.add_hline(y=0, line={"color": "black", "width": 1})
    for f, t, yl in ((f1, "Validation loss per constituent position", "loss (nats/token)"),
                     (f2, "Gain over the unigram baseline per position", "baseline − loss (nats/token)")):
        f.update_layout(title=t, xaxis_title="constituent position (pT order, 1 = hardest)", yaxis_title=yl,
                        template="plotly_white", height=430, legend={"font": {"size": 12}},
                        margin={"l": 60, "r": 20, "t": 60, "b": 50})
    return {"fig-position-loss": f1, "fig-position-gain": f2}


def _baseline_curve(g: pl.DataFrame) -> tuple[tuple, tuple, str | None]:
    """One cell's baseline per position: (positions, baselines rounded to 1e-9 (nan: none), kind)."""
    g = g.sort("position")
    y = np.round(g["baseline"].cast(pl.Float64).fill_null(np.nan).to_numpy(), 9)
    return tuple(g["position"].to_list()), tuple(y.tolist()), next(iter(g["baseline_kind"].drop_nulls().to_list()), None)


def _ramp(n: int) -> list[str]:
    """n colours from light to dark blue (small to large models)."""
    if n <= 1:
        return ["#1f4e99"]
    return [f"rgb({int(160 - 140 * t)},{int(190 - 120 * t)},{int(240 - 90 * t)})" for t in np.linspace(0, 1, n)]


def position_table(fp: pl.DataFrame, asymptote: tuple[float, tuple[float, float]] | None,
                   asymptote_note: str) -> str:
    """Per cell: validation loss, unigram baseline on the same tokens, stop-token loss, the gain and
    the fraction of the baseline-to-asymptote gap closed, (H - L) / (H - E)."""
    if fp.height == 0:
        return ""
    rows = []
    several_d = fp["D"].n_unique() > 1
    fp = with_baseline_kind(fp)
    kinds = set(fp["baseline_kind"].drop_nulls().to_list())
    who: dict[str, list[str]] = {}
    for _, g in fp.sort(["N", "D", "cell_id"], nulls_last=True).group_by("cell_id", maintain_order=True):
        g = g.filter(pl.col("loss").is_not_null() & pl.col("count").is_not_null())
        n = g["count"].cast(pl.Float64).to_numpy()
        L = float(np.sum(n * g["loss"].to_numpy()) / n.sum()) if n.sum() else math.nan
        b = g.filter(pl.col("baseline").is_not_null())
        H = float(np.sum(b["count"].to_numpy() * b["baseline"].to_numpy()) / b["count"].sum()) if b.height == g.height and b.height else math.nan
        st = g.filter(pl.col("position").is_null())
        stop = f"{fmt_num(st['loss'][0])} (baseline {fmt_num(st['baseline'][0])})" if st.height else "n/a"
        frac = "n/a"
        if asymptote is not None and math.isfinite(H):
            E, (lo, hi) = asymptote
            f = (H - L) / (H - E) if H > E else math.nan
            f_lo = (H - L) / (H - lo) if math.isfinite(lo) and H > lo else -math.inf  # smaller E: smaller fraction
            f_hi = (H - L) / (H - hi) if math.isfinite(hi) and H > hi else math.inf
            frac = f"{fmt_num(f)} {format_interval(f_lo, f_hi)}"
        first = g.row(0, named=True)
        kind = first.get("baseline_kind")
        who.setdefault(kind, []).append(_label(first, several_d))
        h = fmt_num(H) + (f" ({BASELINE_KINDS[kind][0]})" if len(kinds) > 1 and kind in BASELINE_KINDS else "")
        rows.append((html.escape(_label(first, several_d)), fmt_num(first.get("N")), fmt_num(L), h,
                     fmt_num(H - L), stop, frac))
    head = "".join(f"<th>{h}</th>" for h in ("cell", "N", "validation loss", "unigram baseline", "gain",
                                               "stop token loss", "fraction of gap to E closed [95%]"))
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return (f"<table class='params'><tr>{head}</tr>{body}</table><p class='note'>Losses in nats per token over the "
            f"validation jets (all positions and the stop token). {html.escape(baseline_note(kinds, who))} "
            f"Fraction closed = (baseline − loss) / (baseline − E). {html.escape(asymptote_note)}</p>")
