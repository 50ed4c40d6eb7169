"""Sweeps that differ only by tokenizer, side by side, with codebook health (the table of the
report section "Tokenizers side by side", analysis/report/tokenizers.py).

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
