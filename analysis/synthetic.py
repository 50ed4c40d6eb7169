"""Synthetic sweep results shaped exactly like real ones (results rows + learning curves), drawn
from known laws: for tests, demos and benchmarks of the analysis without training anything.

Loss follows L(N, D) = E + A/N^alpha + B/D_eff^beta (D_eff = min(D, tokens_seen)) with
log-normal noise; SWD = floor + k (L - E)^p with noise and a bootstrap error.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# (name, n_layer, n_head, d_model): a ladder like the model presets (N = 12 n_layer d_model^2)
LADDER = [
    ("Pico", 2, 2, 32), ("XXS", 2, 2, 64), ("XS", 3, 3, 96), ("S", 4, 4, 128), ("M-", 6, 4, 192),
    ("M", 8, 4, 256), ("L", 10, 6, 384), ("XL", 12, 8, 512), ("XXL", 16, 12, 768),
]
VOCAB = 8194
SEQ_LEN = 130
BATCH = 32


@dataclass(frozen=True)
class TrueLaw:
    """The generating law (nats per token; N in parameters, D in tokens)."""

    E: float = 1.8
    A: float = 60.0
    alpha: float = 0.35
    B: float = 400.0
    beta: float = 0.42
    noise: float = 0.003  # relative
    swd_floor: float = 0.002
    swd_k: float = 0.05
    swd_p: float = 1.5

    def loss(self, N: np.ndarray, D: np.ndarray) -> np.ndarray:
        return self.E + self.A * np.power(N, -self.alpha) + self.B * np.power(D, -self.beta)


def size_params(n_layer: int, d_model: int) -> tuple[int, int]:
    """(N, N_incl): non-embedding and all parameters (token + position embeddings, tied head)."""
    N = 12 * n_layer * d_model * d_model
    return N, N + VOCAB * d_model + SEQ_LEN * d_model


def cell_id(cfg: dict[str, Any]) -> str:
    return hashlib.sha1(repr(sorted(cfg.items())).encode()).hexdigest()[:10]


def _row(sweep, phase, size, D, tokens, seed, law, rng, C_planned=None, status="done") -> tuple[dict, float]:
    name, n_layer, n_head, d_model = size
    N, N_incl = size_params(n_layer, d_model)
    tokens = int(tokens)
    steps = max(1, tokens // (BATCH * SEQ_LEN))
    tokens = steps * BATCH * SEQ_LEN
    C = 6.0 * N_incl * tokens
    L = float(law.loss(N, min(D, tokens)) * math.exp(rng.normal(0, law.noise)))
    swd = law.swd_floor + law.swd_k * (L - law.E) ** law.swd_p
    swd_err = 0.03 * swd + 2e-4
    swd = float(swd + rng.normal(0, swd_err))
    cfg = {"sweep": sweep, "phase": phase, "size": name, "D": int(D), "tokens": tokens, "seed": seed}
    done = status == "done"
    row = {
        "sweep": sweep, "phase": phase, "cell_id": cell_id(cfg), "cell_group": cell_id({**cfg, "seed": 0}),
        "size": name, "N": N, "N_incl": N_incl,
        "n_layer": n_layer, "d_model": d_model, "n_head": n_head, "D": int(D), "tokens_seen": tokens if done else None,
        "passes": tokens / D if done else None, "C_planned": float(C_planned if C_planned is not None else C),
        "C_spent": C if done else None, "C_exact": C * 1.05 if done else None, "lr": 6e-4, "batch": BATCH,
        "seq_len": SEQ_LEN, "seed": seed, "status": status,
        "final_val_loss": L if done else None, "best_val_loss": L - 0.001 if done else None,
        "swd": swd if done else None, "swd_err": swd_err if done else None,
        "swd_floor": law.swd_floor if done else None, "invalid_frac": 0.001 if done else None,
        "wall_s": 10.0 + C / 1e12, "tokens_per_s": 5e4, "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T01:00:00+00:00" if done else None, "ray_trial_id": f"trial_{cfg['size']}_{seed}",
        "error": None if done else "RuntimeError: synthetic failure",
    }
    return row, L


def curve(row: dict, law: TrueLaw, n_points: int, rng: np.random.Generator) -> list[dict]:
    """A learning curve ending at the row's final loss (tokens, FLOPs, losses per logged step)."""
    if row["status"] != "done" or n_points <= 0:
        return []
    T = row["tokens_seen"]
    steps = T // (BATCH * SEQ_LEN)
    out = []
    for s in np.unique(np.linspace(max(1, steps // n_points), steps, n_points).astype(int)):
        t = int(s) * BATCH * SEQ_LEN
        L = float(law.loss(row["N"], min(row["D"], t)) + 0.5 * (t / 1e5) ** -0.5 * (1 - t / T))
        L = row["final_val_loss"] if s == steps else L * math.exp(rng.normal(0, law.noise))
        out.append({"step": int(s), "tokens": t, "flops": 6.0 * row["N_incl"] * t, "train_loss": L - 0.01,
                    "val_loss": L, "val_loss_err": law.noise * L, "lr": 6e-4, "tokens_per_s": 5e4, "wall_s": t / 5e4})
    if out:
        out[-1].update(position_record(out[-1]["val_loss"], law))
    return out


N_POSITIONS = 40


def position_record(loss: float, law: TrueLaw) -> dict[str, Any]:
    """Per-position keys of an eval record (see scaling_sweeper/train/position_loss.py) whose
    token-weighted mean is `loss`: the baseline falls with position, the model gains a share
    of it that shrinks with position."""
    p = np.arange(1, N_POSITIONS + 1)
    count = np.maximum(1, np.round(1000 * np.exp(-p / 15.0))).astype(int)
    base = 8.0 - 2.0 * np.log1p(p) / np.log(N_POSITIONS)
    shape = base - 0.8 * np.exp(-p / 10.0)
    stop_n, stop_base = 1000, 1.5
    w = np.concatenate([count * shape, [stop_n * 1.0]])
    scale = loss * (count.sum() + stop_n) / w.sum()
    return {"val_loss_pos": (shape * scale).round(6).tolist(), "val_count_pos": count.tolist(),
            "val_loss_stop": round(scale, 6), "val_count_stop": stop_n,
            "baseline_pos": base.round(6).tolist(), "baseline_stop": stop_base, "baseline_kind": "held_out"}


def synthetic_eval(row: dict, rng: np.random.Generator, n: int = 2000) -> dict[str, Any]:
    """An eval.json-like dict with histograms (edges + counts) of six observables: the generated
    jets shifted from the real ones by an amount that grows with the row's SWD."""
    shift = float(row.get("swd") or 0.0) * 5
    specs = {"jet_pt": (575.0, 40.0), "jet_mass": (90.0, 30.0), "n_constituents": (45.0, 12.0),
             "tau21": (0.55, 0.15), "tau32": (0.7, 0.12), "d2": (2.0, 0.8)}
    hists = {}
    for name, (mu, sd) in specs.items():
        edges = np.linspace(mu - 3 * sd, mu + 3 * sd, 31)
        samples = {"real": rng.normal(mu, sd, n), "real_tokenized": rng.normal(mu, sd, n),
                   "real_b": rng.normal(mu, sd, n), "generated": rng.normal(mu + shift * sd, sd * (1 + shift), n)}
        hists[name] = {"edges": edges.tolist(),
                       "counts": {k: np.histogram(v, edges)[0].tolist() for k, v in samples.items()},
                       "underflow": {k: int((v < edges[0]).sum()) for k, v in samples.items()},
                       "overflow": {k: int((v > edges[-1]).sum()) for k, v in samples.items()}}
    return {"swd": row.get("swd"), "swd_err": row.get("swd_err"), "swd_floor": row.get("swd_floor"),
            "swd_floor_err": 0.3 * (row.get("swd_floor") or 0.0), "reference": "tokenized", "histograms": hists}


def synthetic_rows(
    sweep: str = "synthetic",
    *,
    law: TrueLaw = TrueLaw(),
    seeds: int = 2,
    failed: int = 2,
    budgets: tuple[float, ...] = (1e15, 3e15, 1e16, 3e16, 1e17),
    seed: int = 0,
) -> list[dict]:
    """Rows of a three-phase sweep: size (N varies, D = 2e8), data (N fixed, D varies, fixed
    tokens_seen), compute (isoFLOP: 5 budgets x sizes around the optimum), plus failed cells."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        for size in LADDER:
            rows.append(_row(sweep, "size", size, 2e8, 2e8, s, law, rng)[0])
        for D in np.geomspace(4e6, 4e9, 8):
            rows.append(_row(sweep, "data", LADDER[4], D, 1e9, s, law, rng)[0])
    for C in budgets:
        for size in LADDER:
            N_incl = size_params(size[1], size[3])[1]
            tokens = C / (6 * N_incl)
            if tokens < 2e5 or tokens > 1e10:
                continue
            rows.append(_row(sweep, "compute", size, tokens, tokens, 0, law, rng, C_planned=C)[0])
    for i in range(failed):
        rows.append(_row(sweep, "size", LADDER[-1 - i], 2e8, 2e8, 99, law, rng, status="failed")[0])
    return rows


def write_synthetic_sweep(
    sweep_dir: str | Path,
    *,
    law: TrueLaw = TrueLaw(),
    n_curve_points: int = 20,
    with_swd: bool = True,
    run_folders: bool = False,
    seed: int = 0,
    **kw: Any,
) -> list[dict]:
    """Write a synthetic sweep's tables (and optionally its run folders: result.json,
    metrics.jsonl, STATUS) under `sweep_dir`; returns the rows."""
    import json

    from scaling_sweeper.results.tables import write_cell_tables

    sweep_dir = Path(sweep_dir)
    rows = synthetic_rows(sweep_dir.name, law=law, seed=seed, **kw)
    rng = np.random.default_rng(seed + 1)
    for row in rows:
        if not with_swd:
            for k in ("swd", "swd_err", "swd_floor", "invalid_frac"):
                row[k] = None
        cur = curve(row, law, n_curve_points, rng)
        ev = synthetic_eval(row, rng) if with_swd and row["status"] == "done" else None
        if ev is not None:  # eval.json always lives in the run folder (the report's histograms)
            d = sweep_dir / row["cell_id"]
            d.mkdir(parents=True, exist_ok=True)
            (d / "eval.json").write_text(json.dumps(ev))
        if run_folders:
            d = sweep_dir / row["cell_id"]
            d.mkdir(parents=True, exist_ok=True)
            (d / "STATUS").write_text(row["status"] + "\n")
            (d / "metrics.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cur))
            if row["status"] == "done":
                (d / "result.json").write_text(json.dumps(row))
        else:
            flat = None if ev is None else [{k: v for k, v in ev.items() if k != "histograms"}]
            write_cell_tables(sweep_dir, row["cell_id"], row, cur, flat if with_swd else [])
    return rows


# ---------------------------------------------------------------------------------------------
# calibration: do the fits' 95% intervals cover the truth 95% of the time?

#: 1-D laws with known parameters (x = model size N, y = loss) and the exponent checked
CALIBRATION_LAWS: dict[str, tuple[dict[str, float], str]] = {
    "log": ({"a": 4.0, "b": 0.2}, "b"),
    "offset_power": ({"E": 1.5, "A": 30.0, "alpha": 0.3}, "alpha"),
    "power": ({"A": 20.0, "alpha": 0.15}, "alpha"),
}
COVERAGE_RANGE = (0.90, 0.99)  # accepted coverage of a nominal 95% interval over 100 studies


@dataclass
class Coverage:
    """How often the intervals of `param` covered its true value over `n` synthetic studies."""

    law: str
    param: str
    truth: float
    n: int
    covered: int
    median_width: float  # of the intervals (inf when half or more are open)
    intervals: np.ndarray  # (n, 2) lo, hi
    estimates: np.ndarray  # (n,)

    @property
    def coverage(self) -> float:
        return self.covered / self.n if self.n else math.nan

    def ok(self, lo: float = COVERAGE_RANGE[0], hi: float = COVERAGE_RANGE[1]) -> bool:
        """Coverage within [lo, hi]: not too narrow, not absurdly wide."""
        return lo <= self.coverage <= hi

    def rescaled(self, factor: float) -> Coverage:
        """The same studies with every interval's half-widths around the estimate times `factor`
        (to show that a check on coverage catches too narrow or too wide intervals)."""
        est = self.estimates[:, None]
        iv = est + (self.intervals - est) * factor
        hit = int(np.sum((iv[:, 0] <= self.truth) & (self.truth <= iv[:, 1])))
        return Coverage(self.law, self.param, self.truth, self.n, hit, float(np.median(iv[:, 1] - iv[:, 0])), iv,
                        self.estimates)


def _coverage(law: str, param: str, truth: float, ests: list[float], ivs: list[tuple[float, float]]) -> Coverage:
    iv = np.array(ivs, dtype=float).reshape(-1, 2)
    hit = int(np.sum((iv[:, 0] <= truth) & (truth <= iv[:, 1])))
    return Coverage(law, param, truth, len(iv), hit, float(np.median(iv[:, 1] - iv[:, 0])), iv, np.array(ests, float))


def law_coverage(law: str, *, n_studies: int = 100, x: np.ndarray | None = None, noise: float | np.ndarray = 0.01,
                 seed: int = 0, level: float = 0.95, weighted: bool = False) -> Coverage:
    """`n_studies` studies of a 1-D law (8 sizes over 4 decades, Gaussian noise `noise` in y, one
    value or one per point), each fitted with `fit_law` (no bootstrap: the reported intervals need
    none), with the known noise as per-point errors when `weighted`; the coverage of the
    exponent's interval."""
    from analysis.fits.laws import fit_law
    from analysis.fits.result import MODELS

    truth, param = CALIBRATION_LAWS[law]
    x = np.geomspace(1e4, 1e8, 8) if x is None else np.asarray(x, float)
    y0 = MODELS[law](truth, x)
    rng = np.random.default_rng(seed)
    ests, ivs = [], []
    for _ in range(n_studies):
        r = fit_law(x, y0 + rng.normal(0, noise, x.size), law, n_boot=0, ci_level=level,
                    yerr=np.broadcast_to(noise, x.shape) if weighted else None)
        ests.append(r.params[param])
        ivs.append(r.ci[param])
    return _coverage(law, param, truth[param], ests, ivs)


def chinchilla_coverage(*, n_studies: int = 100, law: TrueLaw = TrueLaw(noise=0.003), seed: int = 0,
                        level: float = 0.95) -> dict[str, Coverage]:
    """`n_studies` studies of the joint law on a 4 x 4 grid of N (1e5..1e8) and D (1e7..1e10)
    with log-normal noise, each fitted with `fit_chinchilla`; coverage of alpha and beta."""
    from analysis.fits.chinchilla import fit_chinchilla

    Ns, Ds = np.geomspace(1e5, 1e8, 4), np.geomspace(1e7, 1e10, 4)
    N, D = (a.ravel() for a in np.meshgrid(Ns, Ds))
    L0 = law.loss(N, D)
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[list, list]] = {"alpha": ([], []), "beta": ([], [])}
    for _ in range(n_studies):
        r = fit_chinchilla(N, D, L0 * np.exp(rng.normal(0, law.noise, N.size)), n_boot=0, n_starts=1,
                           ci_level=level)
        for k, (e, iv) in out.items():
            e.append(r.params[k])
            iv.append(r.ci[k])
    return {k: _coverage("chinchilla", k, getattr(law, k), e, iv) for k, (e, iv) in out.items()}


def effective_data_study(*, R_star: float = 15.0, law: TrueLaw = TrueLaw(noise=0.003), seed: int = 0,
                         Ns: np.ndarray | None = None, tokens: np.ndarray | None = None,
                         passes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A data-constrained study drawn from the effective-data law (analysis/fits/effective_data.py)
    with the generating `law`'s E, A, alpha, B, beta and the given R*: every N x tokens_seen x
    passes arm, U = tokens_seen / passes, log-normal noise. Returns arrays N, U, tokens_seen, L."""
    from analysis.fits.effective_data import effective_data_law

    Ns = np.geomspace(1e5, 1e7, 3) if Ns is None else np.asarray(Ns, float)
    tokens = np.geomspace(1e7, 1e9, 3) if tokens is None else np.asarray(tokens, float)
    passes = np.array([1, 2, 4, 8, 16, 32, 64], float) if passes is None else np.asarray(passes, float)
    N, T, P = (a.ravel() for a in np.meshgrid(Ns, tokens, passes, indexing="ij"))
    U = T / P
    p = {"E": law.E, "A": law.A, "alpha": law.alpha, "B": law.B, "beta": law.beta, "R_star": R_star}
    L = effective_data_law(p, N, U, T) * np.exp(np.random.default_rng(seed).normal(0, law.noise, N.size))
    return {"N": N, "U": U, "tokens_seen": T, "L": L}
