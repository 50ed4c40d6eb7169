"""How the report's seed rule fits a true law (analysis/seed_spread.py, docs/analysis.md#seeds).

    .venv/bin/python scripts/seed_calibration.py [--studies 200] [--seed 0]

Synthetic studies of a true saturating law L = 1.5 + 40 N^-0.3 at 8 sizes (1e4 .. 1e7), each
cell trained with k seeds: every seed run draws a training noise tau of its own plus an
evaluation noise sigma common to the cell's seeds (they share the validation jets) and stores
sigma as its statistical error. For each (k, tau, sigma) it fits the offset-power law two ways,
weighted by the errors, and prints the median chi2/ndof and how often the 95% interval of the
exponent covers 0.3:

    seed means   one point per cell at the mean over its seeds, error folded by SEED_MEAN_RULE
    single runs  every seed run a point with its statistical error only

No torch, no Ray: numpy, polars and analysis.fits.
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from analysis.fits.compare import compare_laws
from analysis.seed_spread import seed_means

CASES = ((2, 0.03, 0.003), (4, 0.03, 0.003), (4, 0.003, 0.003))  # (seeds, tau, sigma) in nats


def study(x: np.ndarray, truth: np.ndarray, k: int, tau: float, sigma: float, rng: np.random.Generator) -> pl.DataFrame:
    rows = []
    for i, m in enumerate(truth):
        common = rng.normal(0, sigma)
        for s in range(k):
            rows.append({"sweep": "s", "cell_id": f"c{i}s{s}", "cell_group": f"c{i}", "seed": s, "N": float(x[i]),
                         "val_loss": m + rng.normal(0, tau) + common, "val_loss_err": sigma})
    return pl.DataFrame(rows)


def fit(d: pl.DataFrame):
    return compare_laws(d["N"].to_numpy(), d["val_loss"].to_numpy(), ("offset_power",),
                        yerr=d["val_loss_err"].to_numpy(), n_boot=0).results["offset_power"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    x = np.geomspace(1e4, 1e7, 8)
    truth = 1.5 + 40 * x**-0.3
    rng = np.random.default_rng(a.seed)
    for k, tau, sigma in CASES:
        out = {"seed means": ([], 0), "single runs": ([], 0)}
        for _ in range(a.studies):
            d = study(x, truth, k, tau, sigma, rng)
            for name, frame in (("seed means", seed_means(d, "val_loss", "val_loss_err")), ("single runs", d)):
                r = fit(frame)
                chi, cov = out[name]
                chi.append(r.chi2_ndof)
                out[name] = (chi, cov + int(r.ci["alpha"][0] <= 0.3 <= r.ci["alpha"][1]))
        print(f"k = {k} seeds, tau = {tau}, sigma = {sigma}: " + "; ".join(
            f"{name}: median chi2/ndof {np.median(chi):.2f}, exponent covered {cov / a.studies:.0%}"
            for name, (chi, cov) in out.items()))


if __name__ == "__main__":
    main()
