"""The field's generation metrics beside the SWD, each with a floor and an error (docs/metrics.md).

METRICS is the registry: one entry per metric family, each a pure function (reference sample,
other sample, parameters) -> {key: MetricValue}. `jet_metrics` evaluates the enabled entries twice:
generated vs the reference R (-> `<key>`, `<key>_err`) and the second real sample vs R (the floor,
-> `<key>_floor`, `<key>_floor_err`), at the same evaluation size and with the same seeds. A new
metric is one new `Metric` entry (and, if it needs a new per-jet feature matrix, one FEATURES entry).

  fpd    Frechet physics distance on the 36 EFPs (d <= 4), extrapolated to N -> inf (fpd_kpd.fpd)
  kpd    kernel physics distance on the same EFPs (fpd_kpd.kpd)
  kl     quantile-binned KL(real || generated) per observable -> kl_<observable> (quantile_kl)
  auc    held-out ROC AUC of a classifier on jet observables (classifier)
  auc_constituents   the same on the leading constituents (pT / pT_jet, eta_rel, phi_rel) + multiplicity

Invalid jets: a jet enters every metric iff it enters the SWD: generated jets without a stop token
or malformed, empty jets and jets with non-finite SWD observables are excluded (counted in
eval.json's counts and invalid_frac); real jets likewise. A metric further drops rows whose own
features are non-finite (none for valid jets in practice; counted in jet_metrics.details.<key>).
A metric with fewer than min_jets usable rows on either side is null, with the reason.

Cost: the reference's EFPs and every floor depend only on the two real samples (and the metric
settings), not on the model, so they are computed once per dataset and kept in a cache file
(`MetricCache`) keyed by the content of those samples, the settings and the metric code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from scaling_sweeper.base.config import to_dict
from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.evaluate import classifier, efp, fpd_kpd, quantile_kl
from scaling_sweeper.evaluate.observables import OBSERVABLES, jet_pt, padded_constituents

#: OmniJet-alpha's jet-level observables of the quantile KL
KL_OBSERVABLES: tuple[str, ...] = ("jet_pt", "jet_eta", "jet_phi", "jet_mass", "tau21", "tau32", "n_constituents")


@dataclass
class JetMetricsConfig:
    """Settings of the metrics beside the SWD (`eval.jet_metrics` in a spec; `sweeper eval --set
    jet_metrics.<field>=...`). Defaults follow JetNet (FPD, KPD) and OmniJet-alpha (KL)."""

    names: list[str] = field(default_factory=lambda: ["fpd", "kpd", "kl", "auc", "auc_constituents"])  # of METRICS; [] = SWD only
    kl_observables: list[str] = field(default_factory=lambda: list(KL_OBSERVABLES))
    kl_bins: int = 50  # equiprobable bins of the real sample (outer bins open)
    auc_observables: list[str] = field(default_factory=lambda: list(OBSERVABLES))  # features of `auc`
    auc_constituents: int = 30  # leading constituents (by pT) that `auc_constituents` sees
    auc_folds: int = 2  # cross-fitting folds: each jet scored by a model that did not train on it
    fpd_min_samples: int = fpd_kpd.FPD_MIN_SAMPLES  # FPD batch sizes (scaled down in proportion when
    fpd_max_samples: int = fpd_kpd.FPD_MAX_SAMPLES  # fewer jets are evaluated than fpd_max_samples)
    fpd_batches: int = fpd_kpd.FPD_BATCHES  # batches per size
    fpd_points: int = fpd_kpd.FPD_POINTS  # sizes, evenly spaced in 1/N
    kpd_batches: int = fpd_kpd.KPD_BATCHES
    kpd_batch_size: int = fpd_kpd.KPD_BATCH_SIZE  # capped at the evaluation size
    workers: int = 0  # threads sharing EFPs and metrics (BLAS/OpenMP run single-threaded); 0 = min(2, cpus)
    cache: bool = True  # keep reference EFPs and floors per dataset (MetricCache)
    cache_dir: str | None = None  # None: <real jets folder>/eval_cache

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in METRICS]
        if unknown or len(set(self.names)) != len(self.names):
            raise ConfigError(f"eval.jet_metrics.names: unknown or repeated {unknown or self.names} "
                              f"(valid: {', '.join(METRICS)})")
        for name in ("kl_observables", "auc_observables"):
            bad = [o for o in getattr(self, name) if o not in OBSERVABLES]
            if bad or not getattr(self, name):
                raise ConfigError(f"eval.jet_metrics.{name}: unknown or empty {bad} (valid: {', '.join(OBSERVABLES)})")
        for name, low in (("kl_bins", 2), ("auc_constituents", 1), ("auc_folds", 2), ("fpd_min_samples", 2),
                          ("fpd_batches", 1), ("fpd_points", 3), ("kpd_batches", 1), ("kpd_batch_size", 2),
                          ("workers", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"eval.jet_metrics.{name} must be >= {low}, got {getattr(self, name)}")
        if self.fpd_max_samples <= self.fpd_min_samples:
            raise ConfigError(f"eval.jet_metrics.fpd_max_samples ({self.fpd_max_samples}) must exceed "
                              f"fpd_min_samples ({self.fpd_min_samples})")


@dataclass(frozen=True)
class MetricValue:
    """One metric number with its error (None: not computable, `details` says why)."""

    value: float | None
    err: float | None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricParams:
    cfg: JetMetricsConfig
    n_bootstrap: int
    seed: int
    min_jets: int


# ------------------------------------------------------------------------------ per-jet features
def leading_constituents(jets: ak.Array, k: int) -> np.ndarray:
    """(n_jets, 3 k + 1): pT / pT_jet, eta_rel, phi_rel of the k highest-pT constituents (zeros past
    the end) and the constituent count."""
    pt, eta, phi, mask = padded_constituents(jets)
    order = np.argsort(-np.where(mask, pt, -np.inf), axis=1, kind="stable")[:, :k]
    take = [np.take_along_axis(a, order, 1) for a in (pt, eta, phi, mask)]
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = take[0] / jet_pt(jets)[:, None]
    cols = [np.where(take[3], a, 0.0) for a in (rel, take[1], take[2])]
    if cols[0].shape[1] < k:
        cols = [np.pad(c, ((0, 0), (0, k - c.shape[1]))) for c in cols]
    return np.concatenate([*cols, mask.sum(1, keepdims=True).astype(np.float64)], axis=1)


#: per-jet feature matrices a metric can ask for: name -> f(jets, config)
FEATURES: dict[str, Callable[[ak.Array, JetMetricsConfig], np.ndarray]] = {
    "efp": lambda jets, cfg: efp.efp_features(jets, workers=cfg.workers or None),
    "constituents": lambda jets, cfg: leading_constituents(jets, cfg.auc_constituents),
}


class JetSample:
    """The usable jets of one sample: their observables and (computed on first use) feature matrices."""

    def __init__(self, obs: dict[str, np.ndarray], jets: ak.Array | None, valid: np.ndarray, cfg: JetMetricsConfig):
        self.obs = {k: np.asarray(v)[valid] for k, v in obs.items()}
        self.jets = None if jets is None else jets[np.asarray(valid)]
        self.cfg = cfg
        self.features: dict[str, np.ndarray] = {}
        self.seconds: dict[str, float] = {}

    def __len__(self) -> int:
        return len(next(iter(self.obs.values()))) if self.obs else 0

    def feature(self, name: str) -> np.ndarray:
        if name not in self.features:
            if self.jets is None:
                raise ValueError(f"feature {name!r} needs the jets, not only their observables")
            t = time.perf_counter()
            self.features[name] = FEATURES[name](self.jets, self.cfg)
            self.seconds[name] = time.perf_counter() - t
        return self.features[name]

    def matrix(self, names: list[str]) -> np.ndarray:
        return np.stack([self.obs[n] for n in names], axis=1)


def _finite_rows(x: np.ndarray) -> np.ndarray:
    return np.isfinite(x).all(1) if x.ndim == 2 else np.isfinite(x)


def _rest(d: dict[str, Any]) -> dict[str, Any]:
    """A result's dict without its value and err (MetricValue holds those)."""
    return {k: v for k, v in d.items() if k not in ("value", "err")}


def _pair(ref: np.ndarray, other: np.ndarray, p: MetricParams) -> tuple[np.ndarray, np.ndarray, dict]:
    """Finite rows of both samples, what was dropped, and whether enough remain."""
    r_ok, o_ok = _finite_rows(ref), _finite_rows(other)
    info = {"n_ref": int(r_ok.sum()), "n_other": int(o_ok.sum()),
            "dropped_nonfinite_ref": int((~r_ok).sum()), "dropped_nonfinite_other": int((~o_ok).sum())}
    if info["n_ref"] < p.min_jets or info["n_other"] < p.min_jets:
        info["reason"] = f"fewer than min_jets={p.min_jets} usable jets ({info['n_ref']} reference, {info['n_other']} other)"
    return ref[r_ok], other[o_ok], info


# ------------------------------------------------------------------------------ the metrics
def _fpd(ref: JetSample, other: JetSample, p: MetricParams) -> dict[str, MetricValue]:
    x, y, info = _pair(ref.feature("efp"), other.feature("efp"), p)
    if "reason" in info:
        return {"fpd": MetricValue(None, None, info)}
    c = p.cfg
    scale = min(1.0, min(len(x), len(y)) / c.fpd_max_samples)  # JetNet's sizes, scaled to the sample
    lo, hi = max(2, int(c.fpd_min_samples * scale)), max(3, int(c.fpd_max_samples * scale))
    r = fpd_kpd.fpd(x, y, lo, hi, c.fpd_batches, c.fpd_points, seed=p.seed, n_bootstrap=p.n_bootstrap)
    return {"fpd": MetricValue(r.value, r.err, {**info, **_rest(r.to_dict())})}


def _kpd(ref: JetSample, other: JetSample, p: MetricParams) -> dict[str, MetricValue]:
    x, y, info = _pair(ref.feature("efp"), other.feature("efp"), p)
    if "reason" in info:
        return {"kpd": MetricValue(None, None, info)}
    size = max(2, min(p.cfg.kpd_batch_size, len(x), len(y)))
    r = fpd_kpd.kpd(x, y, p.cfg.kpd_batches, size, seed=p.seed)
    return {"kpd": MetricValue(r.value, r.err, {**info, "batch_size": size, "batches": list(r.points)})}


def _kl(ref: JetSample, other: JetSample, p: MetricParams) -> dict[str, MetricValue]:
    out = {}
    for name in p.cfg.kl_observables:
        x, y, info = _pair(ref.obs[name], other.obs[name], p)
        if "reason" in info:
            out[f"kl_{name}"] = MetricValue(None, None, info)
            continue
        r = quantile_kl.quantile_kl(x, y, p.cfg.kl_bins, p.n_bootstrap, p.seed)
        if r.infinite:
            info["reason"] = "infinite: a bin holding real jets holds no generated jet"
        out[f"kl_{name}"] = MetricValue(r.value, r.err, {**info, **_rest(r.to_dict())})
    return out


def _auc_on(key: str, x: np.ndarray, y: np.ndarray, p: MetricParams) -> dict[str, MetricValue]:
    x, y, info = _pair(x, y, p)
    if "reason" not in info and min(len(x), len(y)) < p.cfg.auc_folds:
        info["reason"] = f"fewer jets than auc_folds={p.cfg.auc_folds}"
    if "reason" in info:
        return {key: MetricValue(None, None, info)}
    r = classifier.classifier_auc(x, y, p.cfg.auc_folds, p.n_bootstrap, p.seed)
    return {key: MetricValue(r.value, r.err, {**info, "fold_aucs": list(r.fold_aucs)})}


def _auc(ref: JetSample, other: JetSample, p: MetricParams) -> dict[str, MetricValue]:
    names = list(p.cfg.auc_observables)
    return _auc_on("auc", ref.matrix(names), other.matrix(names), p)


def _auc_constituents(ref: JetSample, other: JetSample, p: MetricParams) -> dict[str, MetricValue]:
    return _auc_on("auc_constituents", ref.feature("constituents"), other.feature("constituents"), p)


@dataclass(frozen=True)
class Metric:
    name: str
    compute: Callable[[JetSample, JetSample, MetricParams], dict[str, MetricValue]]
    features: tuple[str, ...]  # FEATURES it reads (EFPs are cached per dataset)
    observables: Callable[[JetMetricsConfig], list[str]]  # observables it reads
    doc: str


#: the registry: name -> Metric (a new metric is one entry here)
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("fpd", _fpd, ("efp",), lambda c: [], "Frechet physics distance of the 36 EFPs, N -> inf"),
    Metric("kpd", _kpd, ("efp",), lambda c: [], "kernel physics distance (polynomial MMD) of the 36 EFPs"),
    Metric("kl", _kl, (), lambda c: list(c.kl_observables), "quantile-binned KL(real || generated) per observable"),
    Metric("auc", _auc, (), lambda c: list(c.auc_observables), "classifier AUC on jet observables"),
    Metric("auc_constituents", _auc_constituents, ("constituents",), lambda c: [],
           "classifier AUC on the leading constituents"),
)}


def needed_observables(cfg: JetMetricsConfig) -> list[str]:
    """The observables the enabled metrics read (evaluate_run computes them for every sample)."""
    return list(dict.fromkeys(o for n in cfg.names for o in METRICS[n].observables(cfg)))


# ------------------------------------------------------------------------------ the per-dataset cache
CACHED_FEATURES = ("efp",)  # reference features kept in the cache (the expensive ones)
_CODE_FILES = ("efp.py", "fpd_kpd.py", "quantile_kl.py", "classifier.py", "jet_metrics.py", "observables.py")


def _code_hash() -> str:
    import sklearn

    h = hashlib.sha256(sklearn.__version__.encode())
    here = Path(__file__).parent
    for name in _CODE_FILES:
        h.update((here / name).read_bytes())
    return h.hexdigest()


def _jets_digest(h: Any, s: JetSample, observables: list[str]) -> None:
    if s.jets is not None:
        for f in ("part_pt", "part_eta_rel", "part_phi_rel"):
            h.update(np.ascontiguousarray(ak.to_numpy(ak.flatten(s.jets[f])), dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(ak.to_numpy(ak.num(s.jets["part_pt"], axis=1)), dtype=np.int64).tobytes())
    for o in observables:
        h.update(o.encode())
        h.update(np.ascontiguousarray(s.obs[o], dtype=np.float64).tobytes())


def cache_key(ref: JetSample, ref_b: JetSample, p: MetricParams) -> str:
    """sha256 of both real samples' content, the metric settings (less where the cache lives and the
    thread count), n_bootstrap, seed, min_jets and the metric code (source files, scikit-learn)."""
    settings = {k: v for k, v in to_dict(p.cfg).items() if k not in ("cache", "cache_dir", "workers")}
    h = hashlib.sha256(json.dumps({"settings": settings, "n_bootstrap": p.n_bootstrap, "seed": p.seed,
                                   "min_jets": p.min_jets, "code": _code_hash()}, sort_keys=True).encode())
    obs = needed_observables(p.cfg)
    for s in (ref, ref_b):
        h.update(b"|sample|")
        _jets_digest(h, s, obs)
    return h.hexdigest()


class MetricCache:
    """Reference features and floors of one (reference, second real sample, settings) in
    `<dir>/jet-metrics-<key>.npz`. Written atomically (temp file + rename); read only if the file
    loads, names the same key and its checksum matches its content; anything else is a miss (and the
    file is rewritten). Never raises: an unwritable folder or a corrupt file costs a recomputation."""

    def __init__(self, directory: str | Path, key: str):
        self.key = key
        self.path = Path(directory) / f"jet-metrics-{key[:32]}.npz"
        self.note: str | None = None

    @staticmethod
    def _checksum(arrays: dict[str, np.ndarray], meta: str) -> str:
        h = hashlib.sha256(meta.encode())
        for name in sorted(arrays):
            h.update(name.encode())
            h.update(str(arrays[name].dtype).encode() + str(arrays[name].shape).encode())
            h.update(np.ascontiguousarray(arrays[name]).tobytes())
        return h.hexdigest()

    def load(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files if k not in ("meta", "checksum")}
                meta_text, checksum = str(z["meta"]), str(z["checksum"])
            meta = json.loads(meta_text)
            if meta.get("key") != self.key or checksum != self._checksum(arrays, meta_text):
                self.note = f"{self.path}: key or checksum mismatch; recomputed"
                return None
            return arrays, meta
        except Exception as e:  # noqa: BLE001 - a corrupt cache is a miss, never a crash
            self.note = f"{self.path}: unreadable ({type(e).__name__}); recomputed"
            return None

    def save(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        from scaling_sweeper.base.runfolder import atomic_write

        meta_text = json.dumps({**meta, "key": self.key}, sort_keys=True)
        payload = {**arrays, "meta": np.array(meta_text), "checksum": np.array(self._checksum(arrays, meta_text))}
        try:
            atomic_write(self.path, lambda f: np.savez(f, **payload))
        except OSError as e:
            self.note = f"{self.path}: not written ({e.strerror or e}); floors are recomputed next time"


# ------------------------------------------------------------------------------ evaluation
def _to_json(v: MetricValue) -> dict[str, Any]:
    return {"value": v.value, "err": v.err, **v.details}


def _from_json(d: dict[str, Any]) -> MetricValue:
    d = dict(d)
    return MetricValue(d.pop("value"), d.pop("err"), d)


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


#: metrics by decreasing cost, so the longest jobs start first
_COST_ORDER = ("auc_constituents", "auc", "fpd", "kpd")


def jet_metrics(gen: JetSample, ref: JetSample, ref_b: JetSample, cfg: JetMetricsConfig, *,
                n_bootstrap: int, seed: int, min_jets: int, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """The enabled metrics (cfg.names) of `gen` and of the floor `ref_b`, both against `ref`.

    Returns flat numbers for eval.json (`<key>`, `<key>_err`, `<key>_floor`, `<key>_floor_err`)
    and a `jet_metrics` dict (per-key details of both, timings, cache use). BLAS and OpenMP run
    single-threaded here and cfg.workers threads share the work instead (the metrics are many small
    matrix operations, which multi-threaded BLAS slows down badly on a busy machine)."""
    from threadpoolctl import threadpool_limits

    p = MetricParams(cfg, n_bootstrap, seed, min_jets)
    names = list(cfg.names)
    workers = cfg.workers or min(2, os.cpu_count() or 1)
    timings: dict[str, float] = {}
    cache = MetricCache(cache_dir, cache_key(ref, ref_b, p)) if (cfg.cache and cache_dir and names) else None
    hit = cache.load() if cache else None
    floors: dict[str, MetricValue] = {}
    if hit is not None:
        arrays, meta = hit
        for f in CACHED_FEATURES:
            if f"ref_{f}" in arrays:
                ref.features[f] = arrays[f"ref_{f}"]
        floors = {k: _from_json(v) for k, v in meta["floors"].items()}
    order = sorted(names, key=lambda n: _COST_ORDER.index(n) if n in _COST_ORDER else len(_COST_ORDER))
    jobs = [("floor", n, ref_b) for n in order if hit is None] + [("generated", n, gen) for n in order]

    def run(job: tuple[str, str, JetSample]) -> tuple[str, str, dict[str, MetricValue], float]:
        kind, n, other = job
        t = time.perf_counter()
        with threadpool_limits(limits=1):  # again here: OpenMP's thread count is per calling thread
            res = METRICS[n].compute(ref, other, p)
        return kind, n, res, time.perf_counter() - t

    results: dict[str, MetricValue] = {}
    with threadpool_limits(limits=1):
        features = {f for n in names for f in METRICS[n].features}
        for s in (ref, gen, *([ref_b] if hit is None else [])):  # features first: metric jobs only read them
            for f in sorted(features):
                s.feature(f)
        if workers > 1 and len(jobs) > 1:
            with ThreadPoolExecutor(workers) as pool:
                done = list(pool.map(run, jobs))
        else:
            done = [run(j) for j in jobs]
    for kind, n, res, sec in done:
        (floors if kind == "floor" else results).update(res)
        timings[f"{n}_floor_s" if kind == "floor" else f"{n}_s"] = sec
    if cache is not None and hit is None:
        cache.save({f"ref_{f}": ref.features[f] for f in CACHED_FEATURES if f in ref.features},
                   {"floors": {k: _to_json(v) for k, v in floors.items()}})
    for s_name, s in (("generated", gen), ("reference", ref), ("reference_b", ref_b)):
        for f, sec in s.seconds.items():
            timings[f"features_{f}_{s_name}_s"] = sec
    out: dict[str, Any] = {}
    for key, v in results.items():
        fl = floors.get(key, MetricValue(None, None))
        out[key], out[f"{key}_err"] = _finite_or_none(v.value), _finite_or_none(v.err)
        out[f"{key}_floor"], out[f"{key}_floor_err"] = _finite_or_none(fl.value), _finite_or_none(fl.err)
    out["jet_metrics"] = {
        "names": names,
        "details": {k: {"generated": _to_json(results[k]), "floor": _to_json(floors.get(k, MetricValue(None, None)))}
                    for k in results},
        "timings": timings,
        "run": {"workers": workers},  # nested: the evals table takes only top-level numbers of this dict
        "cache": None if cache is None else {"path": str(cache.path), "hit": hit is not None, "note": cache.note},
    }
    return out
