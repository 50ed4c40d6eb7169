"""Make a dataset folder: jets from a source, in chunks -> parquet splits -> tokenizer + token shards.

    <out>/manifest.json          args + package versions + counts (written last: its presence
                                 with the same args makes `make_dataset` a no-op)
    <out>/chunks/chunk-NNNNN.{parquet,json}   one part + done-marker per chunk (chunks.py): the
                                 unit of work, of parallelism (local processes or Ray tasks) and
                                 of resume; a re-run makes only the chunks without a valid marker
    <out>/{train,val,test}.parquet   each chunk's split parts concatenated in chunk order (one
                                 row group per chunk), streamed: memory is one chunk
    <out>/tokens/                index.json, train.bin or train-00000.bin ... (shards.py),
                                 tokenizer.json, tokenization_report.json, manifest.json

Splits are assigned inside each chunk (a seeded shuffle of the chunk cut by the split fractions),
the tokenizer is fitted on a seeded sample of at most `fit_jets` training jets, and encoding
streams the split files row group by row group into shards, so peak memory is bounded by the
chunk size and the fit sample, not by the dataset size. Folders made by the format-1 code (one
`jets.parquet`, whole-dataset shuffle) are still recognised as cached and their tokens still load.

One concept over ~600 lines: making a dataset folder (jets in chunks, the split files, the tokens,
their reports, `describe`); a chunk's task is chunks.py, running tasks is tasks.py.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path

import awkward as ak
import numpy as np

from scaling_sweeper.base.errors import ConfigError, DataError
from scaling_sweeper.base.progress import Progress
from scaling_sweeper.base.runfolder import atomic_write_json
from scaling_sweeper.data.chunks import (
    ChunkTask,
    chunk_splits,
    finished_markers,
    iter_split_files,
    make_chunk,
    make_lock,
    read_chunk,
)
from scaling_sweeper.data.pythia import DEFAULT_CHUNK_JETS, PythiaConfig, chunk_quotas, chunk_seed
from scaling_sweeper.data.shards import SPLITS, ShardIndex, ShardWriter, sha256_file
from scaling_sweeper.data.tasks import ChunkProgress, TaskExecutor, run_tasks
from scaling_sweeper.data.tokenizer import (
    DEFAULT_N_BINS,
    TOKENIZER_VERSION,
    Tokenizer,
    TokenizerMismatchError,
    load_tokenizer_file,
    tokenization_report,
    tokenizer_class,
    tokenizer_id,
    tokenizer_info,
)

# the tokenization report's round-trip check: (tokenizer, jets) -> {swd_roundtrip, swd_floor, ...}
RoundTrip = Callable[[Tokenizer, ak.Array], dict]

DATASET_FORMAT_VERSION = 2
LEGACY_FORMAT_VERSION = 1  # one jets.parquet, whole-dataset shuffle, worker-count-dependent jets
SOURCES = ("pythia", "aspen", "jetclass")
_VERSIONED = ("scaling-sweeper", "numpy", "awkward", "pyarrow", "pythia8mc", "fastjet", "uproot", "h5py")


@dataclass(frozen=True)
class TokenizeConfig:
    """Tokenizer settings for `tokenize_dataset` (kind: a tokenizer.TOKENIZER_KINDS entry)."""

    n_bins: tuple[int, int, int] = DEFAULT_N_BINS  # binned: bins for (log pt, eta_rel, phi_rel)
    max_constituents: int = 128  # seq_len = max_constituents + 2
    binning: tuple[str, str, str] = ("uniform", "quantile", "quantile")  # binned: uniform | quantile
    fit_seed: int = 0  # seed of the fit sample (jets) and of the fit (binned: quantile subsample; vq: init,
    # batches, dead-code replacement)
    fit_jets: int = 100_000  # the tokenizer is fitted on a seeded sample of at most this many train jets
    rows_per_shard: int | None = None  # rows per token shard file; None: ~1 GiB shards
    kind: str = "binned"  # binned | vq (a tokenizer.TOKENIZER_KINDS entry)
    vq: dict = field(default_factory=dict)  # vq: vq_tokenizer.VQConfig fields (defaults otherwise)
    tokenizer_file: str | None = None  # encode with this fitted tokenizer file instead of fitting one

    def key(self) -> dict:
        """Cache key (JSON form): the format-1 fields always, later fields only when set away from
        their default, so tokens made by older code stay cached (a tokenizer file by its sha256)."""
        d = {"n_bins": list(self.n_bins), "max_constituents": self.max_constituents,
             "binning": list(self.binning), "fit_seed": self.fit_seed}
        for name, default in (("fit_jets", 100_000), ("rows_per_shard", None), ("kind", "binned"), ("vq", {})):
            if getattr(self, name) != default:
                d[name] = getattr(self, name)
        if self.tokenizer_file is not None:
            d["tokenizer_file"] = {"path": str(Path(self.tokenizer_file).resolve()),
                                   "sha256": sha256_file(self.tokenizer_file)}
        return json.loads(json.dumps(d))

    def validate(self) -> TokenizeConfig:
        if self.fit_jets < 1:
            raise ConfigError(f"fit_jets must be >= 1, got {self.fit_jets}")
        if self.rows_per_shard is not None and self.rows_per_shard < 1:
            raise ConfigError(f"rows_per_shard must be >= 1, got {self.rows_per_shard}")
        make_tokenizer(self)  # bad bins / vq settings, a file of another kind or size fail here
        return self


def make_tokenizer(cfg: TokenizeConfig) -> Tokenizer:
    """The (unfitted, or loaded from cfg.tokenizer_file) tokenizer `cfg` asks for; bad settings,
    a file of another kind (TokenizerKindError) or of another codebook size / max_constituents
    (TokenizerMismatchError) raise here, before any compute."""
    cls = tokenizer_class(cfg.kind)
    try:
        tok = cls.from_config(cfg)  # type: ignore[attr-defined]
    except TypeError as e:
        raise ConfigError(f"tokenizer {cfg.kind}: bad settings ({e})") from None
    if cfg.tokenizer_file is None:
        return tok
    loaded = load_tokenizer_file(cfg.tokenizer_file, cfg.kind)
    if loaded.max_constituents != cfg.max_constituents:
        raise TokenizerMismatchError(f"{cfg.tokenizer_file}: max_constituents {loaded.max_constituents} != "
                                     f"{cfg.max_constituents} asked for")
    if cfg.kind == "vq" and cfg.vq.get("codebook_size") not in (None, loaded.codebook_size):
        raise TokenizerMismatchError(f"{cfg.tokenizer_file}: codebook size {loaded.codebook_size} != "
                                     f"{cfg.vq['codebook_size']} asked for")
    return loaded


@dataclass(frozen=True)
class DatasetConfig:
    """What `make_dataset` makes; all fields but `workers` form the cache key."""

    source: str = "pythia"  # pythia | aspen | jetclass
    n_jets: int | None = 20000  # jets to generate (pythia) or read at most (files; None = all)
    seed: int = 0  # master seed: per-chunk Pythia seeds and per-chunk split shuffles
    workers: int = 1  # local processes running chunks (does not change the jets; not in the key)
    inputs: tuple[str, ...] = ()  # input files for aspen / jetclass, read in this order
    chunk_jets: int = DEFAULT_CHUNK_JETS  # jets per chunk: the unit of work and of resume
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
        if self.chunk_jets < 1:
            raise ConfigError(f"chunk_jets must be >= 1, got {self.chunk_jets}")
        if self.max_constituents < 1:
            raise ConfigError(f"max_constituents must be >= 1, got {self.max_constituents}")
        f = self.splits
        if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1.0) > 1e-9 or f[0] <= 0:
            raise ConfigError(f"splits must be 3 fractions (train > 0, val, test) summing to 1, got {f}")
        return self

    def cache_key(self) -> dict:
        d = self._key_base()
        d["workers"] = None
        d["format_version"] = DATASET_FORMAT_VERSION
        return json.loads(json.dumps(d))  # the form it has when read back from manifest.json

    def legacy_cache_key(self) -> dict:
        """The key format-1 code wrote for these arguments (its jets depended on `workers`)."""
        d = self._key_base()
        d.pop("chunk_jets")
        d["format_version"] = LEGACY_FORMAT_VERSION
        return json.loads(json.dumps(d))

    def _key_base(self) -> dict:
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
        return d


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


def plan_chunks(cfg: DatasetConfig) -> list[ChunkTask]:
    """The chunk tasks of a dataset (pythia: quotas of chunk_jets; files: row ranges of at most
    chunk_jets rows within each file, in file order, capped at n_jets in total)."""
    common = {"splits": tuple(cfg.splits), "split_seed": cfg.seed, "max_constituents": cfg.max_constituents}
    if cfg.source == "pythia":
        pcfg = replace(cfg.pythia, max_constituents=cfg.max_constituents)
        return [ChunkTask(index=i, source="pythia", n_jets=k, pythia=pcfg, pythia_seed=chunk_seed(cfg.seed, i),
                          **common) for i, k in enumerate(chunk_quotas(cfg.n_jets, cfg.chunk_jets))]
    if cfg.source == "aspen":
        from scaling_sweeper.data.aspen import count_aspen as count
    else:
        from scaling_sweeper.data.jetclass import count_jetclass as count
    tasks: list[ChunkTask] = []
    left = cfg.n_jets
    for f in cfg.inputs:
        n = count(f)
        if left is not None:
            n = min(n, left)
            left -= n
        for lo in range(0, n, cfg.chunk_jets):
            tasks.append(ChunkTask(index=len(tasks), source=cfg.source, n_jets=min(cfg.chunk_jets, n - lo),
                                   input=str(Path(f).resolve()), start=lo, **common))
        if left == 0:
            break
    if not tasks:
        raise DataError(f"{', '.join(cfg.inputs)}: no jets")
    return tasks


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
    chunk_jets: int = DEFAULT_CHUNK_JETS,
    executor: TaskExecutor | None = None,
    tokenize: bool = True,
    tokenizer: TokenizeConfig | None = None,
    roundtrip: RoundTrip | None = None,
    progress: bool | None = None,
    force: bool = False,
    verbose: bool = False,
) -> Path:
    """Make (or reuse, or finish) the dataset folder `out_dir`; see the module docstring.
    `input`: files or globs (aspen/jetclass; n_jets caps the total). Chunks run in this process
    (workers=1), on `workers` local processes, or on `executor` (Ray tasks on a cluster:
    scaling_sweeper.cluster.ray_tasks.RayTasks); the folder must be on storage every node sees.
    `roundtrip`: see `tokenize_dataset`. A
    second call with the same arguments (and unchanged input files) is a no-op; a call after an
    interrupted one makes only the missing chunks. Returns out_dir."""
    out = Path(out_dir)
    cfg = DatasetConfig(
        source=source, n_jets=n_jets, seed=seed, workers=workers,
        inputs=_as_inputs(input), pythia=pythia or PythiaConfig(),
        max_constituents=max_constituents, splits=tuple(splits), chunk_jets=chunk_jets,
    ).validate()
    tok_cfg = tokenizer or TokenizeConfig(max_constituents=max_constituents)
    if tokenize:  # bad tokenizer settings fail here, before any generation
        tok_cfg.validate()
    manifest_path = out / "manifest.json"
    old = _read_manifest(manifest_path)
    split_files = [f"{s}.parquet" for s in SPLITS]
    cached = not force and old is not None and all((out / f).is_file() for f in split_files) and (
        old.get("args") == cfg.cache_key()
        or (old.get("format_version") == LEGACY_FORMAT_VERSION and old.get("args") == cfg.legacy_cache_key()
            and (out / "jets.parquet").is_file()))
    if cached:
        if verbose:
            print(f"jets: cached in {out} ({old.get('n_jets')} jets)")
    else:
        manifest = _make_jets(out, cfg, executor=executor, progress=progress, force=force)
        if verbose:
            rate = manifest["generation"].get("jets_per_s_per_core")
            extra = f", {rate:.1f} jets/s per core" if rate else ""
            print(f"jets: wrote {manifest['n_jets']} jets to {out} in {manifest['n_chunks']} chunks"
                  f" ({manifest['chunks_made']} made now){extra}")
    if tokenize:
        tokenize_dataset(out, out / "tokens", cfg=tok_cfg, roundtrip=roundtrip,
                         force=force or not cached, verbose=verbose, progress=progress)
    return out


def _make_jets(out: Path, cfg: DatasetConfig, *, executor: TaskExecutor | None, progress: bool | None,
               force: bool) -> dict:
    """Make the missing chunks, then the split files and manifest.json, holding the folder's
    lock (two makes never write one folder; a killed one releases it). Returns the manifest."""
    with make_lock(out):
        return _make_jets_locked(out, cfg, executor=executor, progress=progress, force=force)


def _make_jets_locked(out: Path, cfg: DatasetConfig, *, executor: TaskExecutor | None, progress: bool | None,
                      force: bool) -> dict:
    t0 = time.perf_counter()
    (out / "manifest.json").unlink(missing_ok=True)
    tasks = plan_chunks(cfg)
    markers = finished_markers(out, tasks, force=force)
    todo = [t for t in tasks if t.index not in markers]
    total = sum(t.n_jets for t in tasks)
    prog = ChunkProgress(len(tasks), total, f"{cfg.source} jets", enabled=progress,
                         done_chunks=len(markers), done_jets=sum(m["n_jets"] for m in markers.values()))

    def done(i: int, marker: dict) -> None:
        markers[todo[i].index] = marker
        prog.done(marker["n_jets"])

    where = str(out.resolve())  # the tasks may run in other processes or on other nodes
    run_tasks(make_chunk, [(t, where) for t in todo], workers=cfg.workers, executor=executor, on_done=done)
    _drop_stale_chunks(out, len(tasks))
    (out / "jets.parquet").unlink(missing_ok=True)  # a format-1 file of an older make
    ordered = [markers[t.index] for t in tasks]
    counts = _write_split_files(out, ordered)
    stats = [m["stats"] for m in ordered]
    cpu_s = sum(st.get("cpu_seconds", 0.0) for st in stats)
    generation = {
        "n_events": sum(st["n_events"] for st in stats) if cfg.source == "pythia" else None,
        "worker_s": sum(st.get("seconds", 0.0) for st in stats),
        "worker_cpu_s": cpu_s,
        "jets_per_s_per_core": total / cpu_s if cpu_s > 0 else None,
    }
    manifest = {
        "format_version": DATASET_FORMAT_VERSION,
        "args": cfg.cache_key(),
        "versions": package_versions(),
        "n_jets": total,
        "splits": counts,
        "n_chunks": len(tasks),
        "chunks_made": len(todo),
        "chunk_sha256": [m["sha256"] for m in ordered],
        "generation": generation,
        "wall_s": time.perf_counter() - t0,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


def _drop_stale_chunks(out: Path, n_chunks: int) -> None:
    """Remove chunk files numbered beyond this plan (left by a larger earlier request)."""
    for p in (out / "chunks").glob("chunk-*.*"):
        try:
            i = int(p.name.split(".")[0].split("-")[1])
        except (IndexError, ValueError):
            continue
        if i >= n_chunks:
            p.unlink(missing_ok=True)


def _write_split_files(out: Path, markers: list[dict]) -> dict[str, int]:
    """{train,val,test}.parquet from the chunk parts in chunk order, one row group per chunk,
    each part's sha256 checked as it is read. Returns the jets per split."""
    counts = {s: sum(m["splits"][s] for m in markers) for s in SPLITS}
    for s in SPLITS:
        path = out / f"{s}.parquet"
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")

        def parts(split: str = s):
            for m in markers:
                if m["splits"][split]:
                    yield chunk_splits(read_chunk(out, m), m)[split]

        if counts[s]:
            ak.to_parquet_row_groups(parts(), tmp)
        else:  # an empty split: an empty file with the schema
            ak.to_parquet(read_chunk(out, markers[0])[:0], tmp)
        tmp.replace(path)
    return counts


def _as_inputs(input) -> tuple[str, ...]:
    """Input files in order; a pattern with *, ? or [ expands to its sorted matches."""
    if input is None:
        return ()
    items = [input] if isinstance(input, (str, Path)) else list(input)
    out: list[str] = []
    for f in items:
        f = str(f)
        if any(c in f for c in "*?["):
            hits = sorted(glob.glob(f))
            if not hits:
                raise DataError(f"{f}: no input file matches")
            out.extend(hits)
        else:
            out.append(f)
    return tuple(out)


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
    roundtrip: RoundTrip | None = None,
    force: bool = False,
    verbose: bool = False,
    report_jets: int = 20_000,
    progress: bool | None = None,
) -> Path:
    """Fit a tokenizer of kind cfg.kind on a seeded sample of jets_dir/train.parquet (at most
    cfg.fit_jets jets; or load cfg.tokenizer_file), encode every split row group by row group into
    token shards in out_dir (default jets_dir/tokens) with tokenizer.json beside them, and write
    tokenization_report.json (on the first `report_jets` test jets; with `roundtrip`, e.g.
    evaluate.run.tokenizer_roundtrip_report, also its round-trip SWD vs the floor under
    `roundtrip_swd`: the check lives in the evaluation layer, the command line passes it). Cached on (cfg, sha256 of the split files). A vq fit checkpoints to out_dir/vq_train.pt
    and resumes from it. progress: see scaling_sweeper.base.progress (None: a bar or periodic lines;
    False: silent). Returns out_dir."""
    jets_dir = Path(jets_dir)
    out = Path(out_dir) if out_dir is not None else jets_dir / "tokens"
    cfg = (cfg or TokenizeConfig()).validate()
    files = _split_jets_files(jets_dir)
    tok = make_tokenizer(cfg)  # named errors before any reading or fitting
    key = {
        "tokenize": cfg.key(),
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
    n = {s: _parquet_rows(p) for s, p in files.items()}
    with Progress(sum(n.values()), "tokenize", unit="jet", enabled=progress) as bar:
        if not tok.fitted:
            bar.note(f"fitting the tokenizer on {min(cfg.fit_jets, n['train']):,} train jets ({cfg.kind})")
        tok = _fit_tokenizer(cfg, tok, fit_sample(files["train"], cfg.fit_jets, cfg.fit_seed), out, verbose)
        tok_path = tok.save(out / "tokenizer.json")
        writer = ShardWriter(out, seq_len=tok.seq_len, vocab_size=tok.vocab_size, pad_token=tok.pad_token,
                             rows_per_shard=cfg.rows_per_shard)
        try:
            for s, path in files.items():
                for jets in iter_split_files(path):  # encoding: progress per row group
                    writer.append(s, tok.encode(jets))
                    bar.update(len(jets))
        except BaseException:
            writer.abort()
            raise
        writer.close(tok_path)
    report_split = "test" if n["test"] else "train"
    report_set = _head(files[report_split], report_jets)
    report = {"split": report_split, **tokenization_report(tok, report_set),
              "tokenizer_id": tokenizer_id(tok.kind, sha256_file(tok_path))}
    if roundtrip is not None:
        report["roundtrip_swd"] = roundtrip(tok, report_set)
    atomic_write_json(out / "tokenization_report.json", report)
    atomic_write_json(manifest_path, {"args": key, "versions": package_versions(),
                                      "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    if verbose:
        print(f"tokens: wrote {out} ({tok.kind} tokenizer, vocab {tok.vocab_size}, seq_len {tok.seq_len}, "
              + ", ".join(f"{s} {k} jets" for s, k in n.items()) + ")")
        print(format_report(report))
    return out


def _fit_tokenizer(cfg: TokenizeConfig, tok: Tokenizer, sample: ak.Array, work_dir: Path,
                   verbose: bool = False) -> Tokenizer:
    """`tok` (make_tokenizer(cfg)) fitted on `sample` unless it came fitted from a file (the one
    place a tokenizer is fitted); a vq fit checkpoints to and resumes from work_dir."""
    if tok.fitted:
        return tok
    kw = {"work_dir": work_dir, "verbose": verbose} if cfg.kind == "vq" else {}
    return tok.fit(sample, seed=cfg.fit_seed, **kw)


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as e:
        raise DataError(f"{path}: corrupt or unreadable parquet ({type(e).__name__}: {e})") from None


def fit_sample(path: str | Path, n: int, seed: int) -> ak.Array:
    """The tokenizer's fit sample: all jets of the split file if it holds at most n, else n jets
    drawn without replacement with `seed` (kept in file order); read one row group at a time."""
    path = Path(path)
    total = _parquet_rows(path)
    if total == 0:
        raise DataError(f"{path}: no training jets to fit the tokenizer on")
    pick = None if total <= n else np.sort(np.random.default_rng([seed, 0x5EED]).choice(total, n, replace=False))
    parts, lo = [], 0
    for jets in iter_split_files(path):
        hi = lo + len(jets)
        if pick is None:
            parts.append(jets)
        else:
            sel = pick[(pick >= lo) & (pick < hi)] - lo
            if len(sel):  # packed: a plain jets[sel] would keep the whole row group alive
                parts.append(ak.to_packed(jets[sel]))
        lo = hi
    return ak.concatenate(parts) if len(parts) > 1 else parts[0]


def _head(path: Path, n: int) -> ak.Array:
    """The first n jets of a split file (row group by row group)."""
    parts, got = [], 0
    for jets in iter_split_files(path):
        parts.append(ak.to_packed(jets[: n - got]))
        got += len(parts[-1])
        if got >= n:
            break
    return ak.concatenate(parts) if len(parts) > 1 else parts[0]


def format_report(report: dict) -> str:
    """One readable paragraph of a tokenization report."""
    fm = report["feature_mae"]
    return (
        f"tokenization distortion on {report['n_jets']} {report.get('split', '')} jets: "
        f"MAE log_pt {fm['log_pt']:.4f}, eta_rel {fm['eta_rel']:.4f}, phi_rel {fm['phi_rel']:.4f}, "
        f"constituent pt rel {report['pt_rel_mae']:.3%}; jet pt rel change {report['jet_pt_rel']['mean']:+.3%}"
        f" (|.| {report['jet_pt_rel']['mean_abs']:.3%}), jet mass rel change {report['jet_mass_rel']['mean']:+.3%}"
        f" (|.| {report['jet_mass_rel']['mean_abs']:.3%}); truncated jets {report['truncated_jet_frac']:.2%}"
        + _health_text(report)
    )


def _health_text(report: dict) -> str:
    """Codebook use and round-trip SWD of a report ('' for reports written before they existed)."""
    out = ""
    cb = report.get("codebook")
    if cb:
        out += (f"; {report.get('kind', 'binned')} codebook {cb['codebook_size']}: {cb['codes_used_frac']:.1%} "
                f"used, perplexity {cb['perplexity']:.0f}")
    rt = report.get("roundtrip_swd") or {}
    if rt.get("swd_roundtrip") is not None and rt.get("swd_floor") is not None:
        out += (f"; round-trip SWD {rt['swd_roundtrip']:.4f} +- {rt['swd_roundtrip_err']:.4f} vs floor "
                f"{rt['swd_floor']:.4f} +- {rt['swd_floor_err']:.4f} ({'within' if rt['within_floor'] else 'ABOVE'})")
    return out


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
        if idx.tokenizer is not None:
            try:
                out["tokenizer_info"] = {k: v for k, v in tokenizer_info(path).items() if k != "sha256"}
            except DataError as e:
                out["tokenizer_info"] = {"error": str(e)}
        rep = _read_manifest(path / "tokenization_report.json")
        if rep is not None:
            out["tokenization_report"] = rep
        from scaling_sweeper.data.known_entropy import read_known_entropy

        known = read_known_entropy(path)  # teacher data: the loss a student converges to
        if known is not None:
            out["data_entropy"] = {k: known.block.get(k) for k in (
                "nats_per_token", "err", "n_rows", "n_tokens", "teacher_loss_excess", "unstopped_frac", "teacher")}
        return out
    manifest = _read_manifest(path / "manifest.json")
    if manifest is None:
        raise DataError(f"{path}: neither a dataset folder (manifest.json) nor a tokens folder (index.json)")
    out = {"dataset_dir": str(path), **{k: manifest.get(k) for k in ("n_jets", "splits", "n_chunks", "args",
                                                                     "versions", "generation", "created_at")}}
    if (path / "tokens" / "index.json").is_file():
        out["tokens"] = describe(path / "tokens")
    return out
