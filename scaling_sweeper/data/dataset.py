"""Make a dataset folder: jets from a source -> parquet splits -> tokenizer + token shards.

    <out>/manifest.json          args + package versions + counts (written last: its presence
                                 with the same args makes `make_dataset` a no-op)
    <out>/jets.parquet           all jets, in source order (see jets.py for the form)
    <out>/{train,val,test}.parquet   seeded shuffle of jets.parquet cut by split fractions
    <out>/tokens/                index.json, {train,val,test}.bin (shards.py), tokenizer.json,
                                 tokenization_report.json, manifest.json (tokenize args)
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import awkward as ak

from scaling_sweeper.data.jets import read_jets, split_jets, write_jets
from scaling_sweeper.data.pythia import PythiaConfig, generate_jets
from scaling_sweeper.data.shards import SPLITS, ShardIndex, sha256_file, write_shards
from scaling_sweeper.data.tokenizer import (
    DEFAULT_N_BINS,
    TOKENIZER_VERSION,
    BinnedTokenizer,
    tokenization_report,
)
from scaling_sweeper.errors import ConfigError, DataError
from scaling_sweeper.progress import Progress
from scaling_sweeper.runfolder import atomic_write_json

DATASET_FORMAT_VERSION = 1
SOURCES = ("pythia", "aspen", "jetclass")
_VERSIONED = ("scaling-sweeper", "numpy", "awkward", "pyarrow", "pythia8mc", "fastjet", "uproot", "h5py")


@dataclass(frozen=True)
class TokenizeConfig:
    """Tokenizer settings for `tokenize_dataset`."""

    n_bins: tuple[int, int, int] = DEFAULT_N_BINS  # bins for (log pt, eta_rel, phi_rel)
    max_constituents: int = 128  # seq_len = max_constituents + 2
    binning: tuple[str, str, str] = ("uniform", "quantile", "quantile")  # per feature: uniform | quantile
    fit_seed: int = 0  # seed of the subsample used for quantiles when the train split is huge


@dataclass(frozen=True)
class DatasetConfig:
    """What `make_dataset` makes; all fields (bar `workers` for file sources) form the cache key."""

    source: str = "pythia"  # pythia | aspen | jetclass
    n_jets: int | None = 20000  # jets to generate (pythia) or read at most (files; None = all)
    seed: int = 0  # master seed: Pythia worker seeds and the split shuffle
    workers: int = 1  # Pythia processes (changes the jets: part of the cache key)
    inputs: tuple[str, ...] = ()  # input files for aspen / jetclass, read in this order
    pythia: PythiaConfig = field(default_factory=PythiaConfig)
    max_constituents: int = 128  # constituents kept per jet (highest pt)
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test fractions

    def validate(self) -> DatasetConfig:
        if self.source not in SOURCES:
            raise ConfigError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.source == "pythia":
            if self.n_jets is None or self.n_jets < 1:
                raise ConfigError(f"n_jets must be >= 1 for pythia, got {self.n_jets}")
            if self.inputs:
                raise ConfigError("--input is only for --source aspen/jetclass")
            self.pythia.validate()
        else:
            if not self.inputs:
                raise ConfigError(f"source {self.source} needs an input file (--input)")
            for f in self.inputs:
                if not Path(f).is_file():
                    raise DataError(f"{f}: input file missing")
            if self.n_jets is not None and self.n_jets < 1:
                raise ConfigError(f"n_jets must be >= 1 or None (all), got {self.n_jets}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.max_constituents < 1:
            raise ConfigError(f"max_constituents must be >= 1, got {self.max_constituents}")
        f = self.splits
        if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1.0) > 1e-9 or f[0] <= 0:
            raise ConfigError(f"splits must be 3 fractions (train > 0, val, test) summing to 1, got {f}")
        return self

    def cache_key(self) -> dict:
        d = asdict(self)
        d["splits"] = list(self.splits)
        if self.source != "pythia":
            d.pop("pythia")
            d["workers"] = None
            d["inputs"] = [
                {"path": str(Path(f).resolve()), "size": Path(f).stat().st_size,
                 "mtime_ns": Path(f).stat().st_mtime_ns}
                for f in self.inputs
            ]
        else:
            d["pythia"]["max_constituents"] = self.max_constituents
        d["format_version"] = DATASET_FORMAT_VERSION
        return json.loads(json.dumps(d))  # the form it has when read back from manifest.json


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _read_manifest(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_source_jets(cfg: DatasetConfig, *, progress: bool | None = None, stats: dict | None = None):
    """The jets of `cfg.source` in the common in-memory form."""
    if cfg.source == "pythia":
        from dataclasses import replace

        pcfg = replace(cfg.pythia, max_constituents=cfg.max_constituents)
        return generate_jets(cfg.n_jets, seed=cfg.seed, workers=cfg.workers, cfg=pcfg, progress=progress,
                             stats=stats)
    if cfg.source == "aspen":
        from scaling_sweeper.data.aspen import read_aspen as read
    else:
        from scaling_sweeper.data.jetclass import read_jetclass as read
    parts, left = [], cfg.n_jets
    for f in cfg.inputs:
        if left is not None and left <= 0:
            break
        parts.append(read(f, n_jets=left, max_constituents=cfg.max_constituents))
        left = None if left is None else left - len(parts[-1])
    return ak.concatenate(parts) if len(parts) > 1 else parts[0]


def make_dataset(
    out_dir: str | Path,
    source: str = "pythia",
    n_jets: int | None = 20000,
    seed: int = 0,
    workers: int = 1,
    *,
    input: str | Path | list[str | Path] | tuple[str | Path, ...] | None = None,
    pythia: PythiaConfig | None = None,
    max_constituents: int = 128,
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
    tokenize: bool = True,
    tokenizer: TokenizeConfig | None = None,
    progress: bool | None = None,
    force: bool = False,
    verbose: bool = False,
) -> Path:
    """Make (or reuse) the dataset folder `out_dir`; see the module docstring. `input`: one file or
    a list of files (aspen/jetclass; n_jets caps the total). A second call with the same
    arguments (and unchanged input files) is a no-op. Returns out_dir."""
    out = Path(out_dir)
    cfg = DatasetConfig(
        source=source, n_jets=n_jets, seed=seed, workers=workers,
        inputs=_as_inputs(input), pythia=pythia or PythiaConfig(),
        max_constituents=max_constituents, splits=tuple(splits),
    ).validate()
    tok_cfg = tokenizer or TokenizeConfig(max_constituents=max_constituents)
    if tokenize:  # bad tokenizer settings fail here, before any generation
        BinnedTokenizer(tok_cfg.n_bins, tok_cfg.max_constituents, tok_cfg.binning)
    key = cfg.cache_key()
    manifest_path = out / "manifest.json"
    old = _read_manifest(manifest_path)
    files = ["jets.parquet"] + [f"{s}.parquet" for s in SPLITS]
    cached = (not force and old is not None and old.get("args") == key
              and all((out / f).is_file() for f in files))
    if cached:
        if verbose:
            print(f"jets: cached in {out} ({old.get('n_jets')} jets)")
    else:
        out.mkdir(parents=True, exist_ok=True)
        manifest_path.unlink(missing_ok=True)
        stats: dict = {}
        t0 = time.perf_counter()
        jets = load_source_jets(cfg, progress=progress, stats=stats)
        write_jets(jets, out / "jets.parquet")
        parts = split_jets(jets, cfg.splits, seed=cfg.seed)
        for name, part in parts.items():
            write_jets(part, out / f"{name}.parquet")
        manifest = {
            "format_version": DATASET_FORMAT_VERSION,
            "args": key,
            "versions": package_versions(),
            "n_jets": len(jets),
            "splits": {k: len(v) for k, v in parts.items()},
            "generation": {k: v for k, v in stats.items() if k != "config"},
            "wall_s": time.perf_counter() - t0,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(manifest_path, manifest)
        if verbose:
            rate = stats.get("jets_per_s_per_core")
            extra = f", {rate:.1f} jets/s per core" if rate else ""
            print(f"jets: wrote {len(jets)} jets to {out}{extra}")
    if tokenize:
        tokenize_dataset(out, out / "tokens", cfg=tok_cfg,
                         force=force or not cached, verbose=verbose, progress=progress)
    return out


def _as_inputs(input) -> tuple[str, ...]:
    if input is None:
        return ()
    if isinstance(input, (str, Path)):
        return (str(input),)
    return tuple(str(f) for f in input)


def _split_jets_files(jets_dir: Path) -> dict[str, Path]:
    files = {s: jets_dir / f"{s}.parquet" for s in SPLITS}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DataError(f"{jets_dir}: missing split files {missing}; run `sweeper data make` first")
    return files


def tokenize_dataset(
    jets_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    cfg: TokenizeConfig | None = None,
    force: bool = False,
    verbose: bool = False,
    progress: bool | None = None,
) -> Path:
    """Fit a BinnedTokenizer on jets_dir/train.parquet, encode every split into token shards in
    out_dir (default jets_dir/tokens) with tokenizer.json beside them, and write
    tokenization_report.json. Cached on (cfg, sha256 of the split files). progress: see
    scaling_sweeper.progress (None: a bar or periodic lines; False: silent). Returns out_dir."""
    jets_dir = Path(jets_dir)
    out = Path(out_dir) if out_dir is not None else jets_dir / "tokens"
    cfg = cfg or TokenizeConfig()
    files = _split_jets_files(jets_dir)
    key = {
        "tokenize": {**asdict(cfg), "n_bins": list(cfg.n_bins), "binning": list(cfg.binning)},
        "jets_sha256": {s: sha256_file(p) for s, p in files.items()},
        "tokenizer_version": TOKENIZER_VERSION,
    }
    key = json.loads(json.dumps(key))  # the form it has when read back from manifest.json
    manifest_path = out / "manifest.json"
    old = _read_manifest(manifest_path)
    if not force and old is not None and old.get("args") == key and (out / "index.json").is_file():
        try:
            ShardIndex.load(out)
            if verbose:
                print(f"tokens: cached in {out}")
            return out
        except DataError:
            pass
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)
    jets = {s: read_jets(p) for s, p in files.items()}
    with Progress(sum(len(j) for j in jets.values()), "tokenize", unit="jet", enabled=progress) as bar:
        bar.note(f"fitting the tokenizer on {len(jets['train']):,} train jets")
        tok = BinnedTokenizer(cfg.n_bins, cfg.max_constituents, cfg.binning).fit(jets["train"], seed=cfg.fit_seed)
        tok_path = tok.save(out / "tokenizer.json")
        arrays = {}
        for s, j in jets.items():  # encoding: progress per split
            arrays[s] = tok.encode(j)
            bar.update(len(j))
    write_shards(out, arrays, vocab_size=tok.vocab_size, pad_token=tok.pad_token, tokenizer_file=tok_path)
    report_split = "test" if len(jets["test"]) else "train"
    report = {"split": report_split, **tokenization_report(tok, jets[report_split])}
    atomic_write_json(out / "tokenization_report.json", report)
    atomic_write_json(manifest_path, {"args": key, "versions": package_versions(),
                                      "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    if verbose:
        print(f"tokens: wrote {out} (vocab {tok.vocab_size}, seq_len {tok.seq_len}, "
              + ", ".join(f"{s} {len(a)} jets" for s, a in arrays.items()) + ")")
        print(format_report(report))
    return out


def format_report(report: dict) -> str:
    """One readable paragraph of a tokenization report."""
    fm = report["feature_mae"]
    return (
        f"tokenization distortion on {report['n_jets']} {report.get('split', '')} jets: "
        f"MAE log_pt {fm['log_pt']:.4f}, eta_rel {fm['eta_rel']:.4f}, phi_rel {fm['phi_rel']:.4f}, "
        f"constituent pt rel {report['pt_rel_mae']:.3%}; jet pt rel change {report['jet_pt_rel']['mean']:+.3%}"
        f" (|.| {report['jet_pt_rel']['mean_abs']:.3%}), jet mass rel change {report['jet_mass_rel']['mean']:+.3%}"
        f" (|.| {report['jet_mass_rel']['mean_abs']:.3%}); truncated jets {report['truncated_jet_frac']:.2%}"
    )


def describe(path: str | Path) -> dict:
    """Summary of a dataset folder (manifest.json) or a tokens folder (index.json)."""
    path = Path(path)
    if (path / "index.json").is_file():
        idx = ShardIndex.load(path)
        out: dict = {
            "tokens_dir": str(path),
            "seq_len": idx.seq_len,
            "vocab_size": idx.vocab_size,
            "pad_token": idx.pad_token,
            "tokenizer": idx.tokenizer,
            "splits": {
                s: {"n_seq": m["n_seq"], "tokens": m["n_seq"] * idx.seq_len, "real_tokens": m["n_real_tokens"]}
                for s, m in idx.splits.items()
            },
        }
        rep = _read_manifest(path / "tokenization_report.json")
        if rep is not None:
            out["tokenization_report"] = rep
        return out
    manifest = _read_manifest(path / "manifest.json")
    if manifest is None:
        raise DataError(f"{path}: neither a dataset folder (manifest.json) nor a tokens folder (index.json)")
    out = {"dataset_dir": str(path), **{k: manifest.get(k) for k in ("n_jets", "splits", "args", "versions",
                                                                     "generation", "created_at")}}
    if (path / "tokens" / "index.json").is_file():
        out["tokens"] = describe(path / "tokens")
    return out
