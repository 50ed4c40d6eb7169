"""Evaluate a finished run folder: sample jets, compute observables, SWD vs real jets with floor.

`evaluate_run(run_dir, cfg)`:
1. loads the newest good checkpoint (`train.load_model`) and the run's own tokenizer (`tokens/`, any kind);
2. reads real jets (default: the `test` split beside the run's tokens folder) and draws two
   disjoint real samples A and B of the evaluation size n, plus their tokenize-decode round trips;
3. generates n jets, decodes them, computes observables; invalid jets (no stop token before the
   maximum length or malformed rows, empty jets, non-finite observables) are counted by reason and
   reported as `invalid_frac`; the SWD uses the valid ones (never a crash, never a silent drop);
4. bootstrapped SWD (mean, std) of generated vs the reference R and the floor (B vs A at R's
   resolution). R is `cfg.reference`: "tokenized" (default, as in the reference paper: the model
   can at best reproduce the tokenized jets, so a perfect model scores the floor) or "original".
   Also reported: swd_floor_original (B vs A), swd_floor_tokenized (rt(B) vs rt(A)),
   swd_roundtrip (rt(A) vs A: tokenization alone; must stay at or below the floor within
   errors: `checks.roundtrip_within_floor`), per-observable W1 (scipy) with bootstrap errors and
   floors (w1_<observable>_floor, _floor_err) and JSON histograms (edges + counts);
5. the field's metrics beside the SWD (cfg.jet_metrics, `jet_metrics.METRICS`: FPD, KPD, quantile KL,
   classifier AUC), each vs R with its floor (B vs R) and error; same valid jets as the SWD;
6. writes `run_dir/eval.json` (flat numeric metrics at the top level: swd, swd_err, swd_floor,
   swd_floor_err, ..., invalid_frac, w1_<observable>, w1_<observable>_err; details nested) and
   updates result.json's swd, swd_err, swd_floor, invalid_frac, w1_* keys.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from scaling_sweeper.base.config import to_dict
from scaling_sweeper.base.errors import ConfigError, DataError, SweeperError
from scaling_sweeper.base.results_schema import EVAL_ROW_KEYS
from scaling_sweeper.base.runfolder import atomic_write_json, read_result, read_status
from scaling_sweeper.evaluate.jet_metrics import JetMetricsConfig, JetSample, jet_metrics, needed_observables
from scaling_sweeper.evaluate.observables import (
    OBSERVABLES,
    SWD_OBSERVABLES,
    compute_observables,
    invalid_mask,
)
from scaling_sweeper.evaluate.swd import SWDResult, bootstrap_swd, split_disjoint

EVAL_FILE = "eval.json"
EVAL_SPLIT_STREAM = 3  # random stream of the evaluation's real split (swd.split_disjoint)


@dataclass
class EvalConfig:
    n_jets: int = 50_000  # evaluation size n: jets generated and per real sample (capped at real/2)
    real: str | None = None  # real jets parquet; None -> <tokens folder>/../<split>.parquet
    split: str = "test"  # real split used when `real` is None
    observables: list[str] = field(default_factory=lambda: list(SWD_OBSERVABLES))  # SWD features
    report_observables: list[str] = field(default_factory=lambda: list(OBSERVABLES))  # W1 + histograms
    n_projections: int = 128  # random directions of the SWD
    n_bootstrap: int = 50  # bootstrap resamples (each of the evaluation size)
    p: float = 1.0  # Wasserstein order
    seed: int = 0  # projections, real-sample split, bootstrap and sampling
    temperature: float = 1.0  # sampling temperature (0 = greedy)
    top_k: int | None = None  # keep the k most likely tokens (None = all)
    batch_size: int | None = None  # jets generated per batch; None: from free GPU memory (256 on CPU)
    use_cache: bool = True  # KV cache during generation
    device: str = "auto"  # "auto" (cuda when available) | "cpu" | "cuda[:N]"
    # sampling numerics (generate.resolve_sampling_precision): auto = bf16 on CUDA devices with
    # bf16 (the KV cache is the bandwidth bound of sampling), fp32 elsewhere; bf16 | fp32 force it.
    # The resolved one is in eval.json (sampling.precision); not part of any cell id.
    precision: str = "auto"
    threads: int = 0  # torch intra-op threads; 0 leaves torch's setting alone
    hist_bins: int = 40  # histogram bins per observable (n_constituents: integer bins)
    min_jets: int = 10  # fewer valid generated or real jets -> swd is null (reported, no crash)
    reference: str = "tokenized"  # real jets the SWD compares with: tokenize-decoded | "original"
    jet_metrics: JetMetricsConfig = field(default_factory=JetMetricsConfig)  # FPD, KPD, KL, AUC (+ floors)

    def __post_init__(self) -> None:
        for name in ("n_jets", "n_projections", "batch_size", "hist_bins", "min_jets"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"eval.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_bootstrap < 2:
            raise ConfigError(f"eval.n_bootstrap must be >= 2, got {self.n_bootstrap}")
        if not self.p >= 1:
            raise ConfigError(f"eval.p must be >= 1, got {self.p}")
        if self.temperature < 0 or (self.top_k is not None and self.top_k < 1):
            raise ConfigError("eval.temperature must be >= 0 and eval.top_k >= 1 or null")
        for name in ("observables", "report_observables"):
            bad = [o for o in getattr(self, name) if o not in OBSERVABLES]
            if bad or not getattr(self, name):
                raise ConfigError(f"eval.{name}: unknown or empty {bad} (valid: {', '.join(OBSERVABLES)})")
        if self.reference not in ("tokenized", "original"):
            raise ConfigError(f"eval.reference must be tokenized or original, got {self.reference!r}")
        if self.split not in ("train", "val", "test"):
            raise ConfigError(f"eval.split must be train, val or test, got {self.split!r}")
        if not (self.device in ("cpu", "auto") or self.device.startswith("cuda")):
            raise ConfigError(f"eval.device {self.device!r} must be cpu, cuda[:N] or auto")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"eval.precision {self.precision!r} must be auto, bf16 or fp32")


# ------------------------------------------------------------------------------ pure helpers
def _matrix(obs: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    return np.stack([obs[n] for n in names], axis=1)


def histogram(values: dict[str, np.ndarray], name: str, bins: int, reference: np.ndarray) -> dict[str, Any]:
    """JSON-able histogram of each sample in `values` on edges fitted to `reference`.

    Edges: integer-centred unit bins for n_constituents, else `bins` equal bins between the
    reference's 0.5% and 99.5% quantiles; under/overflow counted separately.
    """
    ref = reference[np.isfinite(reference)]
    if len(ref) == 0:
        return {"edges": [], "counts": {}, "underflow": {}, "overflow": {}}
    if name == "n_constituents":
        lo, hi = np.floor(ref.min()), np.ceil(ref.max())
        edges = np.arange(lo - 0.5, hi + 1.5, max(1.0, np.ceil((hi - lo + 1) / 200)))
    else:
        lo, hi = np.quantile(ref, [0.005, 0.995])
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
    out: dict[str, Any] = {"edges": edges.tolist(), "counts": {}, "underflow": {}, "overflow": {}}
    for label, v in values.items():
        v = v[np.isfinite(v)]
        out["counts"][label] = np.histogram(v, edges)[0].astype(int).tolist()
        out["underflow"][label] = int(np.sum(v < edges[0]))
        out["overflow"][label] = int(np.sum(v > edges[-1]))
    return out


def _swd_entry(res: SWDResult | None) -> tuple[float | None, float | None]:
    return (None, None) if res is None else (res.mean, res.std)


def compare_samples(gen: np.ndarray, ref: np.ndarray, cfg: EvalConfig, seed_offset: int = 0) -> SWDResult | None:
    """Bootstrapped SWD of (n, d) samples, or None if either has fewer than cfg.min_jets rows."""
    if len(gen) < cfg.min_jets or len(ref) < cfg.min_jets:
        return None
    return bootstrap_swd(gen, ref, cfg.n_bootstrap, cfg.n_projections, cfg.seed + seed_offset, cfg.p)


def evaluate_samples(gen_obs: dict[str, np.ndarray], real_a: dict[str, np.ndarray],
                     real_b: dict[str, np.ndarray], rt_a: dict[str, np.ndarray],
                     rt_b: dict[str, np.ndarray], gen_invalid: np.ndarray, cfg: EvalConfig) -> dict[str, Any]:
    """The metrics of eval.json from observables of the five samples (pure; no model, no I/O).

    real_a / real_b: two disjoint real samples; rt_a / rt_b: their tokenize-decode round trips.
    The reference R (cfg.reference) is rt_a ("tokenized") or real_a ("original"); swd = gen vs R,
    swd_floor = the same statistic for the other real sample at the same resolution vs R.
    Always reported too: swd_floor_original (B vs A), swd_floor_tokenized (rt(B) vs rt(A)) and
    swd_roundtrip (rt(A) vs A). Every SWD uses the same directions (cfg.seed) and is
    standardised with its second sample; invalid jets of any sample are excluded and counted.
    """
    from scipy.stats import wasserstein_distance

    names = list(cfg.observables)

    def valid(obs: dict[str, np.ndarray]) -> np.ndarray:
        return ~invalid_mask({k: obs[k] for k in names})

    def mat(obs: dict[str, np.ndarray], ok: np.ndarray) -> np.ndarray:
        return _matrix(obs, names)[ok]

    ok = {"a": valid(real_a), "b": valid(real_b), "rt_a": valid(rt_a), "rt_b": valid(rt_b), "gen": ~gen_invalid}
    xa, xb = mat(real_a, ok["a"]), mat(real_b, ok["b"])
    ta, tb = mat(rt_a, ok["rt_a"]), mat(rt_b, ok["rt_b"])
    tokenized = cfg.reference == "tokenized"
    ref, ref_b = (ta, tb) if tokenized else (xa, xb)
    res = {
        "gen": compare_samples(mat(gen_obs, ok["gen"]), ref, cfg),
        "floor_original": compare_samples(xb, xa, cfg),
        "floor_tokenized": compare_samples(tb, ta, cfg),
        "roundtrip": compare_samples(ta, xa, cfg),
    }
    res["floor"] = res["floor_tokenized"] if tokenized else res["floor_original"]
    out: dict[str, Any] = {}
    for key, name in (("gen", "swd"), ("floor", "swd_floor"), ("floor_original", "swd_floor_original"),
                      ("floor_tokenized", "swd_floor_tokenized"), ("roundtrip", "swd_roundtrip")):
        out[name], out[f"{name}_err"] = _swd_entry(res[key])
    out["invalid_frac"] = float(gen_invalid.mean()) if len(gen_invalid) else None
    # per-observable W1 (scipy, physical units) vs the reference, with a bootstrap std; histograms
    ref_a_obs, ref_b_obs = (rt_a, rt_b) if tokenized else (real_a, real_b)
    ref_ok, ref_b_ok = (ok["rt_a"], ok["rt_b"]) if tokenized else (ok["a"], ok["b"])
    hists, w1_floor = {}, {}
    for name in cfg.report_observables:
        def finite(v: np.ndarray, m: np.ndarray) -> np.ndarray:
            return v[m & np.isfinite(v)]

        g = finite(gen_obs[name], ok["gen"])
        r, rb = finite(ref_a_obs[name], ref_ok), finite(ref_b_obs[name], ref_b_ok)
        if len(g) >= cfg.min_jets and len(r) >= cfg.min_jets:
            out[f"w1_{name}"] = float(wasserstein_distance(g, r))
            boot = bootstrap_swd(g, r, cfg.n_bootstrap, 1, cfg.seed, 1.0, standardize=False, workers=1)
            out[f"w1_{name}_err"] = boot.std
        else:
            out[f"w1_{name}"], out[f"w1_{name}_err"] = None, None
        if len(rb) >= cfg.min_jets and len(r) >= cfg.min_jets:
            w1_floor[name] = float(wasserstein_distance(rb, r))
            boot = bootstrap_swd(rb, r, cfg.n_bootstrap, 1, cfg.seed, 1.0, standardize=False, workers=1)
            out[f"w1_{name}_floor"], out[f"w1_{name}_floor_err"] = w1_floor[name], boot.std
        else:
            out[f"w1_{name}_floor"], out[f"w1_{name}_floor_err"] = None, None
        samples = {"generated": g, "real": finite(real_a[name], ok["a"]),
                   "real_tokenized": finite(rt_a[name], ok["rt_a"]), "real_b": finite(real_b[name], ok["b"])}
        hists[name] = histogram(samples, name, cfg.hist_bins, samples["real"])
    out["w1_floor"] = w1_floor
    out["histograms"] = hists
    out["swd_full"] = {k: (None if v is None else v.full) for k, v in res.items()}
    checks = {}
    rt, fo, ft = res["roundtrip"], res["floor_original"], res["floor_tokenized"]
    if rt is not None and fo is not None:  # tokenization alone stays within the floor
        checks["roundtrip_within_floor"] = bool(rt.mean <= fo.mean + 2.0 * math.hypot(rt.std, fo.std))
    if ft is not None and fo is not None:  # the tokenized resolution does not inflate the floor
        checks["tokenized_floor_matches"] = bool(abs(ft.mean - fo.mean) <= 2.0 * math.hypot(ft.std, fo.std))
    out["checks"] = checks
    out["reference"] = cfg.reference
    out["counts"] = {
        "generated_valid": int(ok["gen"].sum()), "real_a": int(ok["a"].sum()), "real_b": int(ok["b"].sum()),
        "real_a_invalid": int((~ok["a"]).sum()), "real_b_invalid": int((~ok["b"]).sum()),
        "roundtrip_invalid": int((~ok["rt_a"]).sum() + (~ok["rt_b"]).sum()),
    }
    return out


def evaluate_jet_metrics(gen: tuple[dict[str, np.ndarray], ak.Array], real_a: tuple[dict[str, np.ndarray], ak.Array],
                         real_b: tuple[dict[str, np.ndarray], ak.Array], rt_a: tuple[dict[str, np.ndarray], ak.Array],
                         rt_b: tuple[dict[str, np.ndarray], ak.Array], gen_invalid: np.ndarray, cfg: EvalConfig,
                         cache_dir: str | Path | None = None) -> dict[str, Any]:
    """cfg.jet_metrics (FPD, KPD, KL, AUC, ...) of the generated jets and of the floor, both against
    the reference R of the SWD (rt_a for "tokenized", real_a for "original"; the floor is the other
    real sample at R's resolution). Each sample is (observables, jets) of ALL its jets; the jets used
    are exactly those the SWD uses (generated: ~gen_invalid; real: finite SWD observables).
    Returns eval.json's flat <key>, <key>_err, <key>_floor, <key>_floor_err and `jet_metrics`."""
    mcfg = cfg.jet_metrics
    if not mcfg.names:
        return {}

    def real_sample(sample: tuple[dict[str, np.ndarray], ak.Array]) -> JetSample:
        obs, jets = sample
        return JetSample(obs, jets, ~invalid_mask({k: obs[k] for k in cfg.observables}), mcfg)

    ref, ref_b = (rt_a, rt_b) if cfg.reference == "tokenized" else (real_a, real_b)
    return jet_metrics(JetSample(gen[0], gen[1], ~gen_invalid, mcfg), real_sample(ref), real_sample(ref_b), mcfg,
                       n_bootstrap=cfg.n_bootstrap, seed=cfg.seed, min_jets=cfg.min_jets, cache_dir=cache_dir)


def tokenizer_roundtrip_swd(tokenizer, jets: ak.Array, cfg: EvalConfig | None = None) -> dict[str, Any]:
    """Tokenization alone against the statistical floor, for any tokenizer kind: two disjoint
    halves A, B of `jets` (at most cfg.n_jets each, seeded); swd_roundtrip = SWD(rt(A) vs A),
    swd_floor = SWD(B vs A) (cfg.observables, bootstrap errors) and `within_floor` =
    roundtrip <= floor + 2 sigma (the check `evaluate_samples` makes per run)."""
    cfg = cfg or EvalConfig()
    n = min(cfg.n_jets, len(jets) // 2)
    if n < cfg.min_jets:
        return {"n_jets": int(n), "swd_roundtrip": None, "swd_floor": None, "within_floor": None}
    a, b = split_disjoint(jets, n, cfg.seed, stream=EVAL_SPLIT_STREAM)
    names = list(cfg.observables)
    obs = {k: compute_observables(j, names) for k, j in
           (("a", a), ("b", b), ("rt", tokenizer.decode(tokenizer.encode(a))))}
    mats = {k: _matrix(o, names)[~invalid_mask(o)] for k, o in obs.items()}
    rt, fl = compare_samples(mats["rt"], mats["a"], cfg), compare_samples(mats["b"], mats["a"], cfg)
    out: dict[str, Any] = {"n_jets": int(n), "observables": names}
    out["swd_roundtrip"], out["swd_roundtrip_err"] = _swd_entry(rt)
    out["swd_floor"], out["swd_floor_err"] = _swd_entry(fl)
    out["within_floor"] = (None if rt is None or fl is None
                           else bool(rt.mean <= fl.mean + 2.0 * math.hypot(rt.std, fl.std)))
    return out


def tokenizer_roundtrip_report(tokenizer, jets: ak.Array) -> dict[str, Any]:
    """The round-trip check of a tokens folder's tokenization_report.json (`roundtrip_swd`):
    `tokenizer_roundtrip_swd` on up to 2 x 5000 jets with 20 bootstraps. The command line hands it
    to data.dataset.tokenize_dataset (the data layer does not import the evaluation)."""
    return tokenizer_roundtrip_swd(tokenizer, jets, EvalConfig(n_jets=5000, n_bootstrap=20))


# ------------------------------------------------------------------------------ I/O edges
def _real_jets_path(cfg: EvalConfig, tokens_dir: Path) -> Path:
    if cfg.real is not None:
        p = Path(cfg.real)
        return p / f"{cfg.split}.parquet" if p.is_dir() else p
    return tokens_dir.parent / f"{cfg.split}.parquet"


def cap_note(n_requested: int, n_used: int, n_real: int, real_path: str | Path) -> str | None:
    """Why fewer jets than asked are evaluated (None when none were dropped): the floor compares two
    disjoint real samples of the evaluation size, so n is at most half the real jets."""
    if n_used >= n_requested:
        return None
    return (f"evaluating {n_used:,} jets, not the {n_requested:,} asked: {real_path} holds {n_real:,} real "
            f"jets and the SWD floor needs two disjoint real samples of the evaluation size (n <= "
            f"{n_real:,} / 2); pass --real with more jets to evaluate more")


def evaluate_run(run_dir: str | Path, cfg: EvalConfig | None = None, *, write: bool = True,
                 progress: bool | None = False) -> dict[str, Any]:
    """Evaluate the finished run in `run_dir`; returns (and writes) the eval.json dict.
    progress: None = a bar on a terminal / periodic lines in a log (scaling_sweeper.base.progress),
    False = silent (inside sweep trials). A capped evaluation size is recorded in
    counts.n_jets_cap_note (and said on the progress display)."""
    import torch

    from scaling_sweeper.base.progress import Progress
    from scaling_sweeper.data.jets import read_jets
    from scaling_sweeper.data.tokenizer import load_tokenizer, tokenizer_info
    from scaling_sweeper.evaluate.generate import generate, resolve_sampling_precision, valid_rows
    from scaling_sweeper.train.checkpoint import load_model
    from scaling_sweeper.train.precision import resolve_device

    cfg = cfg or EvalConfig()
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    if status != "done" or read_result(run_dir) is None:
        raise SweeperError(f"{run_dir}: not a finished run (STATUS={status}); evaluate runs with STATUS=done")
    t0 = time.time()
    timings: dict[str, float] = {}
    device = resolve_device(cfg.device, "eval.device")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, tcfg = load_model(run_dir, device=device)
    precision = resolve_sampling_precision(cfg.precision, device)
    tokens_dir = Path(tcfg.data)
    tokenizer = load_tokenizer(tokens_dir)  # the cell's own tokenizer, whatever its kind
    tok_info = tokenizer_info(tokens_dir)
    real_path = _real_jets_path(cfg, tokens_dir)
    real = read_jets(real_path)
    n = min(cfg.n_jets, len(real) // 2)
    note = cap_note(cfg.n_jets, n, len(real), real_path)
    if n < cfg.min_jets:
        raise DataError(f"{_real_jets_path(cfg, tokens_dir)}: {len(real)} real jets, need at least "
                        f"{2 * cfg.min_jets} for two disjoint samples")
    real_a, real_b = split_disjoint(real, n, cfg.seed, stream=EVAL_SPLIT_STREAM)
    timings["load_s"] = time.time() - t0

    t = time.time()
    with Progress(n, "eval: generate", unit="jet", enabled=progress) as bar:
        if note:
            bar.note(note)
        tokens = generate(model, n, tokenizer=tokenizer, temperature=cfg.temperature, top_k=cfg.top_k,
                          seed=cfg.seed, batch_size=cfg.batch_size, use_cache=cfg.use_cache,
                          precision=precision, on_batch=bar.update)
    timings["generate_s"] = time.time() - t
    stages = Progress(2, "eval: score", unit="stage", enabled=progress)
    stages.note(f"observables of {n:,} generated and 4 x {n:,} real jets")
    rows_ok = valid_rows(tokens, tokenizer)
    gen_jets, decode_stats = tokenizer.decode(tokens, return_stats=True)

    t = time.time()
    names = list(dict.fromkeys([*cfg.observables, *cfg.report_observables, *needed_observables(cfg.jet_metrics)]))
    gen_obs = compute_observables(gen_jets, names)
    obs_a = compute_observables(real_a, names)
    obs_b = compute_observables(real_b, names)
    rt_jets_a, rt_jets_b = tokenizer.decode(tokenizer.encode(real_a)), tokenizer.decode(tokenizer.encode(real_b))
    rt_a = compute_observables(rt_jets_a, names)
    rt_b = compute_observables(rt_jets_b, names)
    timings["observables_s"] = time.time() - t
    stages.update(1)
    others = ", ".join(cfg.jet_metrics.names) or "no other metrics"
    stages.note(f"SWD, W1 and {others} with {cfg.n_bootstrap} bootstrap resamples")
    empty = gen_obs["n_constituents"] == 0 if "n_constituents" in gen_obs else \
        ak.to_numpy(ak.num(gen_jets.part_pt, axis=1)) == 0
    nonfinite = invalid_mask({k: gen_obs[k] for k in cfg.observables}) & ~empty
    gen_invalid = ~rows_ok | empty | nonfinite

    t = time.time()
    metrics = evaluate_samples(gen_obs, obs_a, obs_b, rt_a, rt_b, gen_invalid, cfg)
    timings["swd_s"] = time.time() - t
    t = time.time()
    cache_dir = cfg.jet_metrics.cache_dir or real_path.parent / "eval_cache"
    metrics.update(evaluate_jet_metrics((gen_obs, gen_jets), (obs_a, real_a), (obs_b, real_b), (rt_a, rt_jets_a),
                                        (rt_b, rt_jets_b), gen_invalid, cfg, cache_dir))
    timings["jet_metrics_s"] = time.time() - t
    stages.update(1)
    stages.close()
    lengths = ak.to_numpy(ak.num(gen_jets.part_pt, axis=1))
    metrics["counts"].update(
        n_jets=int(n), n_jets_requested=int(cfg.n_jets), n_real_available=int(len(real)), n_jets_cap_note=note,
        invalid_no_stop=int((~rows_ok).sum()), invalid_empty=int((rows_ok & empty).sum()),
        invalid_nonfinite=int((rows_ok & ~empty & nonfinite).sum()), invalid=int(gen_invalid.sum()),
        generated_mean_constituents=float(lengths.mean()) if n else 0.0,
        decode_invalid=int(decode_stats.n_invalid_jets),  # the tokenizer's own count (cross-check)
    )
    timings["wall_s"] = time.time() - t0
    stored = read_result(run_dir) or {}
    out: dict[str, Any] = {
        **metrics,
        "observables": list(cfg.observables),
        "timings": timings,
        "model": {"size": tcfg.size, "N": stored.get("N"), "run_dir": str(run_dir)},
        "tokenizer": {k: tok_info[k] for k in ("kind", "id", "codebook_size")},
        "sampling": {"precision": precision, "device": str(device)},
        "config": to_dict(cfg),
    }
    if write:
        atomic_write_json(run_dir / EVAL_FILE, out)
        update_result(run_dir, out)
    return out


def update_result(run_dir: str | Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Copy swd, swd_err, swd_floor, invalid_frac and w1_* from `metrics` into result.json."""
    run_dir = Path(run_dir)
    row = read_result(run_dir)
    if row is None:
        raise SweeperError(f"{run_dir}: result.json missing or unreadable")
    for k, v in metrics.items():
        if k in EVAL_ROW_KEYS or (k.startswith("w1_") and not isinstance(v, dict)):
            row[k] = v
    atomic_write_json(run_dir / "result.json", row)
    return row
