"""Grid vs random vs adaptive designs on the same synthetic scaling studies.

For each study kind (law + target) and each of --truths synthetic truths (one seed each):
  grid      every (size, tokens) point once (seed 0): its final 95% interval half-width w_grid
            and its FLOPs F_grid (the reference)
  random    the candidate cells in a random order until the target's half-width <= w_grid
  adaptive  analysis.design.next_cells (expected variance reduction per FLOP) until <= w_grid
Both get the grid's FLOPs as budget, run --batch cells at a time (pending cells counted at their
full planned cost when the goal is met) and choose among the same candidates: every grid point
with --replicates seeds (a replicate is its own cell). Printed per design: how many studies
reached w_grid within budget, the FLOPs spent / F_grid (median, 90th percentile, max; a study
that did not reach it counts as infinite), and the coverage of the true target value by the
final 95% interval (grid: its own; others: at their stop).

Truths: L = E + A/N^alpha + B/T^beta + N(0, sigma) per cell (analysis.design.simulate), sigma =
--noise nats, E ~ U(1.5, 2.5), alpha, beta ~ U(0.25, 0.5), the N term at Pico and the T term at
the smallest T each ~ U(0.5, 1.5) nats. Sizes Pico..XXL (N, N_incl from model_config at vocab
8195, seq_len 130), FLOPs C = 6 N_incl T. The misspecified kind draws the losses with
N_eff = N + 0.1 N_embedding (embeddings count a little) while the design fits the law in N:
it shows what a design that trusts its law does when the law is slightly wrong.

    .venv/bin/python benchmarks/bench_design.py [--truths 20] [--batch 2] [--kinds ...]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.design import Candidate, DesignSpec, Target  # noqa: E402
from analysis.design.simulate import SimulatedLoss, run_study, true_target  # noqa: E402
from analysis.synthetic import TrueLaw  # noqa: E402
from scaling_sweeper.base.model_config import SIZES, config_for, count_params  # noqa: E402

VOCAB, SEQ_LEN = 8195, 130
PARAMS = {s: count_params(config_for(s, VOCAB, SEQ_LEN - 1)) for s in SIZES}  # size -> (N, N_incl)
SIZES_USED = list(SIZES)  # the candidates' sizes (--min-size drops the smallest)
MISSPEC = 0.01  # share of the embedding parameters in the misspecified truth's N
T_FIXED = 1e9  # tokens seen of the 1-D study in N
T_GRID = (1e7, 3e7, 1e8, 3e8, 1e9)  # tokens seen of the 2-D study


@dataclass(frozen=True)
class Kind:
    name: str
    law: str
    target: str  # alpha | loss | n_opt
    misspecified: bool = False


KINDS = {
    k.name: k
    for k in (
        Kind("offset_power/alpha", "offset_power", "alpha"),
        Kind("offset_power/E", "offset_power", "E"),
        Kind("chinchilla/loss", "chinchilla", "loss"),
        Kind("chinchilla/n_opt", "chinchilla", "n_opt"),
        Kind("offset_power/alpha misspecified", "offset_power", "alpha", misspecified=True),
        Kind("chinchilla/n_opt misspecified", "chinchilla", "n_opt", misspecified=True),
    )
}


def candidates(law: str, replicates: int) -> list[Candidate]:
    Ts = (T_FIXED,) if law == "offset_power" else T_GRID
    return [Candidate(f"{s}-T{T:.0e}-s{r}", PARAMS[s][0], T, 6.0 * PARAMS[s][1] * T, f"{s} T={T:.0e} seed {r}")
            for s in SIZES_USED for T in Ts for r in range(replicates)]


def target(kind: Kind, half_width: float) -> Target:
    if kind.target in ("alpha", "E"):
        return Target(kind.target, tolerance=half_width)
    if kind.target == "loss":  # L of a 4x larger model than XXL on 10x the largest T: an extrapolation
        return Target("loss", tolerance=half_width, N=4e8, D=1e10)
    return Target("n_opt", factor=math.exp(half_width), C=1e20)


def truth(i: int) -> TrueLaw:
    rng = np.random.default_rng(1000 + i)
    al, be = rng.uniform(0.25, 0.5, 2)
    return TrueLaw(E=float(rng.uniform(1.5, 2.5)), A=float(rng.uniform(0.5, 1.5) * PARAMS["Pico"][0] ** al),
                   alpha=float(al), B=float(rng.uniform(0.5, 1.5) * min(T_GRID) ** be), beta=float(be))


def run_kind(kind: Kind, n_truths: int, batch: int, replicates: int, noise: float) -> dict[str, list]:
    cands = candidates(kind.law, replicates)
    grid = [c.key for c in cands if c.key.endswith("-s0")]
    grid_cost = sum(c.cost for c in cands if c.key.endswith("-s0"))
    size = {c.key: c.key.split("-T")[0] for c in cands}
    n_eff = {c.key: c.N + MISSPEC * (PARAMS[size[c.key]][1] - PARAMS[size[c.key]][0]) for c in cands}
    out: dict[str, list] = {"grid": [], "random": [], "adaptive": []}
    for i in range(n_truths):
        law = truth(i)
        sim = SimulatedLoss(law, noise, seed=i)
        if kind.misspecified:
            def oracle(c, sim=sim):
                return sim.draw(c.key, n_eff[c.key], c.tokens)
        else:
            oracle = sim.oracle()
        ref = DesignSpec(kind.law, cands, target(kind, 1e-12), budget=grid_cost, batch=batch, noise=noise)
        g = run_study(ref, oracle, grid)
        w = g.final.half_width
        true = true_target(ref, law)
        out["grid"].append((1.0, True, abs(g.final.estimate - true) <= w, len(g.finished)))
        spec = DesignSpec(kind.law, cands, target(kind, w), budget=grid_cost, batch=batch, noise=noise)
        order = [str(k) for k in np.random.default_rng(5000 + i).permutation([c.key for c in cands])]
        for name, policy in (("random", order), ("adaptive", "adaptive")):
            tr = run_study(spec, oracle, policy, rng_seed=i)
            f = tr.final
            out[name].append((tr.flops / grid_cost if tr.reached else math.inf, tr.reached,
                              abs(f.estimate - true) <= f.half_width if f.usable else False, len(tr.finished)))
    return out


def history(kind: Kind, batch: int, replicates: int, noise: float, i: int = 0) -> None:
    """The adaptive design's history on truth i: after each finished cell, the FLOPs committed
    (/ grid), the target's estimate and 95% half-width, and the cells proposed with why."""
    cands = candidates(kind.law, replicates)
    grid = [c.key for c in cands if c.key.endswith("-s0")]
    grid_cost = sum(c.cost for c in cands if c.key.endswith("-s0"))
    sim = SimulatedLoss(truth(i), noise, seed=i)
    ref = DesignSpec(kind.law, cands, target(kind, 1e-12), budget=grid_cost, batch=batch, noise=noise)
    w = run_study(ref, sim.oracle(), grid).final.half_width
    spec = DesignSpec(kind.law, cands, target(kind, w), budget=grid_cost, batch=batch, noise=noise)
    tr = run_study(spec, sim.oracle(), "adaptive", rng_seed=i)
    print(f"\n# history: {kind.name}, truth {i} (true value {true_target(spec, truth(i)):.4g}), goal: the grid's "
          f"half-width {w:.4g}; stop: {tr.stop} at {tr.flops / grid_cost:.3f} of the grid's FLOPs")
    print(f"{'FLOPs/grid':>10}  {'finished':18} {'estimate +- half-width':>24}  proposed (why, variance cut per FLOP)")
    for r in tr.rows:
        est = f"{r.estimate:.4g} +- {r.half_width:.3g}" if math.isfinite(r.half_width) else r.status
        why = ", ".join(f"{k} ({w}{'' if not math.isfinite(g) else f' {g:.2e}'})"
                        for k, w, g in zip(r.proposed, r.reasons, r.gain_per_flop))
        print(f"{r.flops / grid_cost:10.4f}  {r.finished_key or '-':18} {est:>24}  {why}")


def summary(rows: list) -> str:
    ratios = np.array([r[0] for r in rows])
    reached = sum(r[1] for r in rows)
    cov = sum(r[2] for r in rows)
    cells = np.median([r[3] for r in rows])
    q = np.quantile(ratios, [0.5, 0.9], method="inverted_cdf")  # an order statistic (inf where not reached)
    fmt = lambda v: "inf" if not math.isfinite(v) else f"{v:.3f}"  # noqa: E731
    return (f"{reached:>3}/{len(rows):<3} {fmt(q[0]):>7} {fmt(q[1]):>7} {fmt(ratios.max()):>7}   "
            f"{cov:>3}/{len(rows):<3} ({cov / len(rows):4.0%})  {cells:6.0f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truths", type=int, default=20)
    ap.add_argument("--batch", type=int, default=2, help="cells running at once")
    ap.add_argument("--replicates", type=int, default=3, help="seeds per (size, tokens) point among the candidates")
    ap.add_argument("--noise", type=float, default=0.01, help="per-cell loss noise (nats, 1 sigma)")
    ap.add_argument("--kinds", nargs="*", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--history", choices=list(KINDS), help="also print the adaptive design's history on truth 0")
    ap.add_argument("--min-size", choices=list(SIZES), default="Pico", help="smallest size among the candidates")
    a = ap.parse_args(argv)
    SIZES_USED[:] = list(SIZES)[list(SIZES).index(a.min_size):]
    print(f"# bench_design: {a.truths} truths per kind, batch {a.batch}, {a.replicates} seeds per point, "
          f"noise {a.noise} nats; sizes {SIZES_USED[0]}..{SIZES_USED[-1]}; budget = the grid's FLOPs")
    print(f"{'kind':34} {'design':9} {'reached':>7} {'median':>7} {'p90':>7} {'max':>7}   "
          f"{'coverage':>15}  {'cells':>6}")
    print(f"{'':34} {'':9} {'':>7} {'FLOPs / grid FLOPs':>23}   {'(95% intervals)':>15}  {'median':>6}")
    for name in a.kinds:
        kind = KINDS[name]
        t0 = time.time()
        res = run_kind(kind, a.truths, a.batch, a.replicates, a.noise)
        for i, design in enumerate(("grid", "random", "adaptive")):
            label = f"{name} ({time.time() - t0:.0f} s)" if i == 0 else ""
            print(f"{label:34} {design:9} {summary(res[design])}", flush=True)
    if a.history:
        history(KINDS[a.history], a.batch, a.replicates, a.noise)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
