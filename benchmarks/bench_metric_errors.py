"""Are the metrics' errors honest? For pairs of independent samples of ONE distribution, compare
the spread of each metric across pairs with the mean error it reports (prints a table; not a test).

Samples: correlated 6-D Gaussians for FPD/KPD, a Gamma(8, 10) "jet mass" for the quantile KL, 4-D
toy jet observables for the classifier AUC. A ratio spread / mean error near 1 means the error
describes the pair-to-pair fluctuation; above 1, the error is too small.

    .venv/bin/python benchmarks/bench_metric_errors.py [--pairs 12] [--n 4000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling_sweeper.evaluate import classifier, fpd_kpd, quantile_kl  # noqa: E402


def gaussian(rng: np.random.Generator, n: int, d: int = 6) -> np.ndarray:
    mix = np.random.default_rng(99).normal(size=(d, d))
    return rng.normal(size=(n, d)) @ mix + 3.0


def toy_observables(rng: np.random.Generator, n: int) -> np.ndarray:
    pt = rng.normal(550.0, 30.0, n)
    m = pt * rng.lognormal(np.log(0.15), 0.35, n)
    return np.stack([pt, m, rng.poisson(20 + m / 5.0), rng.normal(0.6, 0.12, n)], 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--n", type=int, default=4000, help="jets per sample")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    n = args.n
    rows: dict[str, list[tuple[float, float]]] = {k: [] for k in ("fpd", "fpd (JetNet fit error only)", "kpd",
                                                                  "kl", "auc")}
    with threadpool_limits(1):
        for k in range(args.pairs):
            f = fpd_kpd.fpd(gaussian(rng, n), gaussian(rng, n), int(0.4 * n), n, seed=k)
            rows["fpd"].append((f.value, f.err))
            rows["fpd (JetNet fit error only)"].append((f.value, f.fit_err))
            r = fpd_kpd.kpd(gaussian(rng, n), gaussian(rng, n), batch_size=min(5000, n), seed=k)
            rows["kpd"].append((r.value, r.err))
            q = quantile_kl.quantile_kl(rng.gamma(8, 10, n), rng.gamma(8, 10, n), 50, 50, seed=k)
            rows["kl"].append((q.value, q.err))
            a = classifier.classifier_auc(toy_observables(rng, n), toy_observables(rng, n), 2, 50, seed=k)
            rows["auc"].append((a.value, a.err))
    print(f"{args.pairs} pairs of {n} vs {n} samples of one distribution")
    print(f"{'metric':<30}{'mean value':>12}{'spread':>12}{'mean err':>12}{'spread/err':>12}")
    for name, vals in rows.items():
        v = np.array(vals)
        spread, err = v[:, 0].std(ddof=1), v[:, 1].mean()
        print(f"{name:<30}{v[:, 0].mean():>12.3g}{spread:>12.3g}{err:>12.3g}{spread / err:>12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
