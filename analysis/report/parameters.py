"""Report section "Fitted parameters": one table row per fit of the report, every parameter with
its one interval, status, goodness of fit, AICc and BIC."""

from __future__ import annotations

import html
import math

from analysis.fits.result import UNDERDETERMINED, format_interval
from analysis.report.section import FitRow, Section
from analysis.report.text import fmt


def section_params(fits: list[FitRow]) -> Section:
    s = Section("parameters", "Fitted parameters")
    if not fits:
        s.missing = "No fits could be made."
        return s
    rows = []
    for fr in fits:
        if fr.fit is not None:
            r = fr.fit
            if r.status == UNDERDETERMINED:
                params = "not determined (no intervals)"
            elif all(math.isnan(v) for v in r.params.values()):
                params = "no parameters"
            else:
                params = "<br>".join(f"{k} = {fmt(v)} {html.escape(format_interval(*r.ci[k]))}"
                                     for k, v in r.params.items())
            gof = f"RMSE {fmt(r.rmse)}, R² {fmt(r.r2)}" + (f", χ²/ndof {fmt(r.chi2_ndof)}" if r.chi2_ndof is not None else "")
            rows.append((html.escape(fr.name), html.escape(r.formula), r.status, html.escape(r.message), params,
                         gof if r.ok else "", fmt(r.aicc) if r.ok else "", fmt(r.bic) if r.ok else "", str(r.n)))
        else:
            e = fr.extra or {}
            parts = []
            for k in ("a", "b", "pearson_r", "spearman_rho"):
                if k not in e:
                    continue
                ci = e.get(f"{k.split('_')[0]}_ci" if k.endswith(("_r", "_rho")) else f"{k}_ci")
                txt = f"{k} = {fmt(e[k])}"
                if isinstance(ci, (list, tuple)) and len(ci) == 2:
                    txt += " " + format_interval(*(float("nan") if v is None else float(v) for v in ci))
                parts.append(html.escape(txt))
            rows.append((html.escape(fr.name), "", str(e.get("status", "")), html.escape(str(e.get("message", ""))),
                         "<br>".join(parts), "", "", "", str(e.get("n", ""))))
    head = "".join(f"<th>{h}</th>" for h in ("fit", "law", "status", "message", "parameters [95% interval]",
                                               "goodness of fit", "AICc", "BIC", "n"))
    body = "".join("<tr>" + "".join(f"<td class='st-{c}'>{c}</td>" if i == 2 else f"<td>{c}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    s.html = (f"<table class='params'><tr>{head}</tr>{body}</table><p class='note'>One interval per parameter: "
              "profile likelihood for the 1-D laws and the Chinchilla exponents (in closed form for the logarithmic "
              "law), bootstrap over cells for the other Chinchilla parameters. With per-point errors and χ²/ndof ≤ 1 "
              "the threshold is the χ² one of the given errors (normal quantiles); when χ²/ndof &gt; 1 the errors are "
              "scaled by √(χ²/ndof), a scale estimated from the points, so the threshold uses the F (for a straight "
              "line: t) quantile on the fit's degrees of freedom, as it does without errors. '&lt; x' / '&gt; x': the data set no "
              "limit on the other side (the interval runs into a bound of the fit). A fit with fewer than 2 degrees "
              "of freedom is 'underdetermined' and not used.</p>")
    return s
