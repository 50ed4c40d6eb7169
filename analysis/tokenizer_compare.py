"""Report section: sweeps that differ only by tokenizer, side by side, with codebook health.

Input: the trials frame (analysis.tables). Cells are grouped by tokenizer (`tokenizer_id`, or the
sweep name for rows written before tokenizers were recorded). The section appears when the
frame holds finished cells of two or more tokenizers; it shows, per tokenizer: kind, id,
codebook size, its sweeps and cells; validation loss and SWD (with the floor) per model size in
adjacent columns; the loss-vs-N law comparison (best law and its exponent, only with 3+ sizes);
and codebook health from the tokens folder's tokenization report (carried in the row's `extra`
as `tokenizer_health`): fraction of codes used, perplexity, per-feature round-trip MAE (and its
ratio to the binned tokenizer's, when one is present), round-trip SWD vs floor. Loss values of
different tokenizers are in nats per token of different vocabularies: they are compared in
shape (exponents, windows), and only SWD compares the generated jets themselves.
"""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl

FEATURES = ("log_pt", "eta_rel", "phi_rel")
LOSS = "val_loss"


def tokenizer_label(row: dict[str, Any]) -> str:
    """The grouping key of a trials row: its tokenizer id, else its sweep."""
    return str(row.get("tokenizer_id") or f"sweep {row.get('sweep')}")


def _health(extra: Any) -> dict[str, Any]:
    try:
        d = json.loads(extra) if isinstance(extra, str) else {}
    except json.JSONDecodeError:
        return {}
    h = d.get("tokenizer_health") if isinstance(d, dict) else None
    return h if isinstance(h, dict) else {}


def tokenizer_groups(trials: pl.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Finished rows grouped by tokenizer label (insertion order: first appearance)."""
    if trials.height == 0 or "status" not in trials.columns:
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for r in trials.filter(pl.col("status") == "done").iter_rows(named=True):
        out.setdefault(tokenizer_label(r), []).append(r)
    return out


def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    v = [float(r[key]) for r in rows if r.get(key) is not None]
    return float(np.mean(v)) if v else None


def compare_table(groups: dict[str, list[dict[str, Any]]], n_boot: int = 200) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the side-by-side table: one row per tokenizer, per-size loss/SWD columns
    (seed means), the best loss-vs-N law with 3+ sizes, and the codebook health."""
    from analysis.fits.compare import compare_laws
    from analysis.window import learnable_window

    sizes = sorted({r["size"] for rows in groups.values() for r in rows if r.get("N") is not None},
                   key=lambda s: min(r["N"] for rows in groups.values() for r in rows if r["size"] == s))
    binned = next((rows for rows in groups.values() if rows[0].get("tokenizer_kind") == "binned"), None)
    binned_h = _health(binned[0].get("extra")) if binned else {}
    head = ["tokenizer", "kind", "codebook", "sweeps", "cells"]
    head += [f"{s}: {LOSS}" for s in sizes] + [f"{s}: swd (floor)" for s in sizes]
    head += ["loss vs N (best law)", "learnable window along N", "codes used", "perplexity"]
    head += [f"MAE {f}" for f in FEATURES] + ["round-trip SWD (floor)"]
    out = []
    for label, rows in groups.items():
        r0 = rows[0]
        h = _health(r0.get("extra"))
        line = [label, _f(r0.get("tokenizer_kind")), _f(r0.get("codebook_size")),
                _f(", ".join(sorted({str(r["sweep"]) for r in rows}))), str(len(rows))]
        by_size = {s: [r for r in rows if r["size"] == s] for s in sizes}
        line += [_f(_mean(by_size[s], LOSS if LOSS in r0 else "final_val_loss")) for s in sizes]
        for s in sizes:
            swd, fl = _mean(by_size[s], "swd"), _mean(by_size[s], "swd_floor")
            line.append(f"{_f(swd)} ({_f(fl)})" if swd is not None else "–")
        pts = [(float(r["N"]), float(r[LOSS if LOSS in r else "final_val_loss"])) for r in rows
               if r.get("N") is not None and r.get(LOSS if LOSS in r else "final_val_loss") is not None]
        if len({p[0] for p in pts}) >= 3:
            x, y = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
            cmp = compare_laws(x, y, n_boot=n_boot)
            best = cmp.results.get(cmp.best) if cmp.best else None
            params = getattr(best, "params", None) or {}
            exps = ", ".join(f"{k}={_f(v, 3)}" for k, v in params.items() if k in ("E", "alpha"))
            line.append(f"{cmp.best} {exps}" if cmp.best else "no law fits")
            w = learnable_window(x, y, axis="N", metric=LOSS, n_boot=n_boot)
            line.append(html.escape(f"{w.status}: x_sat {w.x_sat:.3g}" if w.status == "saturating" else w.status))
        else:
            line += [f"n/a ({len({p[0] for p in pts})} sizes; needs 3+)"] * 2
        line += [_f(h.get("codes_used_frac"), 3), _f(h.get("perplexity"), 4)]
        for f in FEATURES:
            v, b = h.get(f"mae_{f}"), binned_h.get(f"mae_{f}")
            ratio = f" ({v / b:.2f}x binned)" if v is not None and b and r0.get("tokenizer_kind") != "binned" else ""
            line.append(_f(v, 3) + ratio)
        rt = h.get("swd_roundtrip")
        line.append(f"{_f(rt)} ± {_f(h.get('swd_roundtrip_err'), 2)} ({_f(h.get('swd_floor'))})" if rt is not None
                    else "–")
        out.append(line)
    return head, out


def _figure(groups: dict[str, list[dict[str, Any]]], y: str, title: str) -> go.Figure | None:
    fig = go.Figure()
    n = 0
    for label, rows in groups.items():
        pts = sorted((float(r["N"]), float(r[y]), r.get(f"{y}_err")) for r in rows
                     if r.get("N") is not None and r.get(y) is not None)
        if not pts:
            continue
        n += 1
        err = [p[2] for p in pts]
        fig.add_trace(go.Scatter(
            x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=label,
            error_y=None if any(e is None for e in err) else {"type": "data", "array": err}))
        if y == "swd":
            fl = [float(r["swd_floor"]) for r in rows if r.get("swd_floor") is not None]
            if fl:  # labelled in the legend, never over the data
                x = [p[0] for p in pts]
                fig.add_trace(go.Scatter(x=[min(x) / 1.5, max(x) * 1.5], y=[float(np.median(fl))] * 2, mode="lines",
                                         line={"dash": "dash"}, name=f"SWD floor ({label})"))
    if n == 0:
        return None
    ylab = {"val_loss": "validation loss (nats/token, per vocabulary)", "swd": "SWD"}.get(y, y)
    fig.update_layout(title=title, xaxis_title="N (parameters)", yaxis_title=ylab, xaxis_type="log",
                      template="plotly_white", height=420)
    return fig


def tokenizer_sections(trials: pl.DataFrame, n_boot: int = 200) -> list:
    """[the tokenizer section] when the trials hold 2+ tokenizers, else [] (report.py's hook)."""
    return [section_tokenizer_compare(trials, n_boot)] if len(tokenizer_groups(trials)) >= 2 else []


def section_tokenizer_compare(trials: pl.DataFrame, n_boot: int = 200):
    """The report Section comparing tokenizers (analysis.report.Section; `missing` set when the
    trials hold fewer than two tokenizers)."""
    from analysis.report import Section

    s = Section("tokenizers", "Tokenizers side by side")
    groups = tokenizer_groups(trials)
    if len(groups) < 2:
        s.missing = (f"Needs finished cells of 2+ tokenizers (have {len(groups)}): run sweeps that differ only "
                     "by their tokens folder (e.g. sweeps/tokenizer_smoke.yaml) and report them together.")
        return s
    head, rows = compare_table(groups, n_boot)
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    s.html = ("<p>Validation losses of different tokenizers are per token of different vocabularies: compare "
              "their trends (law, exponent, window), not their values; SWD compares the decoded jets "
              "(each cell decodes with its own tokenizer). Round-trip numbers come from each tokens "
              f"folder's tokenization report.</p><table class='params'><tr>{th}</tr>{body}</table>")
    for y, title in ((LOSS, "Validation loss vs N per tokenizer"), ("swd", "SWD vs N per tokenizer")):
        fig = _figure(groups, y, title)
        if fig is not None:
            s.figures[f"fig-tok-{y}"] = fig
    return s
