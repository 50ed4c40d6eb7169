"""Jet tokenizers: one interface (`Tokenizer`), a registry of kinds (TOKENIZER_KINDS), and the
binned kind (one token per constituent, as in OmniJet-alpha's binned baseline).

Every kind writes the same row layout and the same special tokens, so shards, training,
generation and evaluation do not care which kind made them (the learned VQ-VAE kind lives in
`vq_tokenizer.py`, imported only when used: it needs torch). A new kind is one entry in
TOKENIZER_KINDS: a class with `kind`, `FORMAT`, `n_content`, `max_constituents`,
`encode_constituents`, `decode_constituents`, `fit`, `to_dict`/`from_dict`. Tokenizer files are
versioned JSON with a top-level "kind"; `load_tokenizer_file` dispatches on it and
`tokenizer_id` names a file as `<kind>-<first 12 hex of its sha256>`.

The binned kind:

Each constituent has three features (log pt/GeV, eta_rel, phi_rel), each cut into bins fitted on
the training constituents: "uniform" bins (default for log pt: equal widths between the 0.1% and
99.9% quantiles, plus one tail bin each side reaching the min/max) or "quantile" bins (default for
eta_rel and phi_rel: equal counts, so the dense jet core gets fine bins). A constituent's token is
its joint bin index `(i_logpt * n_eta + i_eta) * n_phi + i_phi`. A jet becomes one row of `seq_len =
max_constituents + 2` tokens:

    [start, c_1, ..., c_n, stop, pad, ..., pad]     constituents sorted by pt descending

Token ids: 0 .. n_content-1 are constituents, then start, stop, pad (vocab_size = n_content + 3).
Decoding maps a token to bin-representative values fitted on the training constituents: the
per-bin median for eta_rel and phi_rel, and log of the per-bin *mean* pt for log pt (so summed
jet pt is unbiased; with 16 log-pt bins the jet pt changes by ~5% per jet, ~0 on average). Values
outside the fitted range fall in the first/last bin. Saved as versioned JSON (`save` / `load`).

One concept over ~600 lines: the tokenizer interface, its registry, the binned tokenizer and the
reports every kind shares (tokenization_report, tokenizer_info / health).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import awkward as ak
import numpy as np

from scaling_sweeper.base.errors import DataError
from scaling_sweeper.base.runfolder import atomic_write_text
from scaling_sweeper.data.jets import check_jets, constituent_jet_kinematics
from scaling_sweeper.data.token_layout import DEFAULT_N_BINS, DEFAULT_VOCAB_SIZE  # noqa: F401 (re-exported)

TOKENIZER_FORMAT = "scaling_sweeper.binned_tokenizer"
TOKENIZER_VERSION = 1
FEATURES = ("log_pt", "eta_rel", "phi_rel")
MAX_VOCAB = 65536  # token ids are stored as uint16

BINNINGS = ("uniform", "quantile")


def constituent_features(jets: ak.Array, max_constituents: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Flat (n_constituents, 3) float64 features (log pt, eta_rel, phi_rel) sorted by pt
    descending within each jet and truncated to max_constituents; and the per-jet counts."""
    order = ak.argsort(jets.part_pt, axis=1, ascending=False, stable=True)
    pt, eta, phi = jets.part_pt[order], jets.part_eta_rel[order], jets.part_phi_rel[order]
    if max_constituents is not None:
        pt, eta, phi = pt[:, :max_constituents], eta[:, :max_constituents], phi[:, :max_constituents]
    counts = ak.to_numpy(ak.num(pt, axis=1)).astype(np.int64)
    flat_pt = ak.to_numpy(ak.flatten(pt)).astype(np.float64)
    if np.any(flat_pt <= 0):
        raise DataError("constituents with pt <= 0 cannot be tokenized (log pt)")
    x = np.stack(
        [np.log(flat_pt), ak.to_numpy(ak.flatten(eta)).astype(np.float64),
         ak.to_numpy(ak.flatten(phi)).astype(np.float64)],
        axis=1,
    )
    return x.reshape(-1, 3), counts


@dataclass
class DecodeStats:
    """What `decode` had to repair. A jet is invalid if its row does not start with `start`, has no
    `stop` before padding/the end, or holds special tokens between start and stop (dropped)."""

    n_jets: int
    n_invalid_jets: int
    n_constituent_tokens: int
    n_invalid_tokens: int

    @property
    def invalid_frac(self) -> float:
        return self.n_invalid_jets / self.n_jets if self.n_jets else 0.0


class TokenizerKindError(DataError):
    """A tokenizer file of another kind than the one asked for (e.g. a binned file given as vq)."""


class TokenizerMismatchError(DataError):
    """A tokenizer that does not fit the shards it is used with (vocabulary / codebook size or
    sequence length differ from the tokens folder's index.json)."""


class Tokenizer:
    """The interface every tokenizer kind implements (see the module docstring). Subclasses set
    `kind`, `FORMAT`, `VERSION`, `max_constituents`, `fit_info` and implement `fitted`,
    `n_content`, `fit`, `encode_constituents`, `decode_constituents`, `to_dict`, `from_dict`."""

    kind: ClassVar[str] = ""
    FORMAT: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    max_constituents: int
    fit_info: dict

    # ---- to implement -----------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        raise NotImplementedError

    @property
    def n_content(self) -> int:
        """Content tokens (the codebook size): ids 0 .. n_content-1."""
        raise NotImplementedError

    def fit(self, jets: ak.Array, *, seed: int = 0, **kwargs) -> Tokenizer:
        raise NotImplementedError

    def encode_constituents(self, x: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """(n, 3) features of jets with `counts` constituents each -> (n,) content token ids."""
        raise NotImplementedError

    def decode_constituents(self, tokens: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """(n,) content tokens of jets with `counts` tokens each -> (n, 3) features."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict, where: str = "tokenizer") -> Tokenizer:
        raise NotImplementedError

    # ---- shared vocabulary ------------------------------------------------------------------
    def _need_fit(self) -> None:
        if not self.fitted:
            raise DataError("tokenizer is not fitted: call fit(jets) or load(path)")

    @property
    def codebook_size(self) -> int:
        return self.n_content

    @property
    def start_token(self) -> int:
        return self.n_content

    @property
    def stop_token(self) -> int:
        return self.n_content + 1

    @property
    def pad_token(self) -> int:
        return self.n_content + 2

    @property
    def vocab_size(self) -> int:
        return self.n_content + 3

    @property
    def seq_len(self) -> int:
        return self.max_constituents + 2

    # ---- shared row layout ------------------------------------------------------------------
    def encode(self, jets: ak.Array) -> np.ndarray:
        """Jets -> (n_jets, seq_len) uint16 rows [start, c_1..c_n, stop, pad...], n <= max_constituents."""
        self._need_fit()
        check_jets(jets)
        x, counts = constituent_features(jets, self.max_constituents)
        out = np.full((len(counts), self.seq_len), self.pad_token, dtype=np.uint16)
        out[:, 0] = self.start_token
        rows = np.repeat(np.arange(len(counts)), counts)
        starts = np.cumsum(counts) - counts
        cols = np.arange(len(x)) - np.repeat(starts, counts) + 1
        out[rows, cols] = self.encode_constituents(x, counts)
        out[np.arange(len(counts)), counts + 1] = self.stop_token
        return out

    def decode(self, tokens: np.ndarray, *, return_stats: bool = False):
        """(n_jets, L) tokens -> jets (part_pt, part_eta_rel, part_phi_rel, jet_pt, jet_eta,
        jet_phi, jet_mass; jet quantities summed from the constituents, eta/phi relative to the
        original axis). Reads each row from position 1 up to the first stop or pad; special
        tokens in between are dropped and counted (see DecodeStats). Also sets `last_stats`."""
        self._need_fit()
        t = np.asarray(tokens)
        if t.ndim != 2:
            raise DataError(f"decode expects a 2-d (n_jets, seq_len) array, got shape {t.shape}")
        t = t.astype(np.int64)
        n, length = t.shape
        pos = np.arange(length)[None, :]
        ends_row = (t == self.stop_token) | (t == self.pad_token)
        ends_row[:, 0] = False
        has_end = ends_row.any(axis=1)
        end = np.where(has_end, ends_row.argmax(axis=1), length)
        inside = (pos >= 1) & (pos < end[:, None])
        content = (t >= 0) & (t < self.n_content)
        keep = inside & content
        bad_tok = inside & ~content
        stopped = has_end & (t[np.arange(n), np.minimum(end, length - 1)] == self.stop_token)
        invalid = (t[:, 0] != self.start_token) | ~stopped | bad_tok.any(axis=1) if n else np.zeros(0, bool)
        counts = keep.sum(axis=1)
        x = self.decode_constituents(t[keep], counts)
        pt = np.exp(x[:, 0]).astype(np.float32)
        parts = ak.zip(
            {
                "part_pt": ak.unflatten(pt, counts),
                "part_eta_rel": ak.unflatten(x[:, 1].astype(np.float32), counts),
                "part_phi_rel": ak.unflatten(x[:, 2].astype(np.float32), counts),
            },
            depth_limit=1,
        )
        kin = constituent_jet_kinematics(parts)
        jets = ak.zip(
            {**{f: parts[f] for f in ak.fields(parts)},
             "jet_pt": kin["pt"], "jet_eta": kin["eta"], "jet_phi": kin["phi"], "jet_mass": kin["mass"]},
            depth_limit=1,
        )
        self.last_stats = DecodeStats(
            n_jets=int(n),
            n_invalid_jets=int(np.sum(invalid)),
            n_constituent_tokens=int(counts.sum()),
            n_invalid_tokens=int(bad_tok.sum() + np.sum(t[:, 0] != self.start_token) if n else 0),
        )
        return (jets, self.last_stats) if return_stats else jets

    # ---- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the versioned JSON file (deterministic bytes for the same fitted tokenizer)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a tokenizer file of this kind; TokenizerKindError for a file of another kind."""
        path = Path(path)
        d = _read_tokenizer_json(path)
        if d.get("kind") != cls.kind:
            raise TokenizerKindError(f"{path}: a {d.get('kind')!r} tokenizer file, not a {cls.kind!r} one")
        return cls.from_dict(d, str(path))


class BinnedTokenizer(Tokenizer):
    """Deterministic quantile-binned tokenizer; see the module docstring."""

    kind = "binned"
    FORMAT = "scaling_sweeper.binned_tokenizer"
    VERSION = 1

    def __init__(
        self,
        n_bins: tuple[int, int, int] = DEFAULT_N_BINS,
        max_constituents: int = 128,
        binning: tuple[str, str, str] = ("uniform", "quantile", "quantile"),
        tail_quantile: float = 0.001,
    ):
        n_bins = tuple(int(b) for b in n_bins)
        binning = tuple(binning)
        if len(binning) != 3 or any(b not in BINNINGS for b in binning):
            raise DataError(f"binning must be 3 of {BINNINGS} (log_pt, eta_rel, phi_rel), got {binning}")
        if not 0 <= tail_quantile < 0.5:
            raise DataError(f"tail_quantile must be in [0, 0.5), got {tail_quantile}")
        if len(n_bins) != 3 or min(n_bins) < 1:
            raise DataError(f"n_bins must be 3 positive ints (log_pt, eta_rel, phi_rel), got {n_bins}")
        if int(np.prod(n_bins)) + 3 > MAX_VOCAB:
            raise DataError(f"n_bins {n_bins} give a vocabulary over {MAX_VOCAB} (uint16 tokens)")
        if max_constituents < 1:
            raise DataError(f"max_constituents must be >= 1, got {max_constituents}")
        self.n_bins_requested = n_bins
        self.max_constituents = int(max_constituents)
        self.binning: tuple[str, str, str] = binning  # type: ignore[assignment]
        self.tail_quantile = float(tail_quantile)
        self.edges: list[np.ndarray] | None = None  # per feature, len n_bins_f + 1, increasing
        self.centers: list[np.ndarray] | None = None  # per feature, len n_bins_f (bin medians)
        self.fit_info: dict = {}

    @classmethod
    def from_config(cls, cfg) -> BinnedTokenizer:
        """From a dataset.TokenizeConfig (n_bins, max_constituents, binning)."""
        return cls(cfg.n_bins, cfg.max_constituents, cfg.binning)

    @property
    def fitted(self) -> bool:
        return self.edges is not None

    @property
    def n_bins(self) -> tuple[int, int, int]:
        """Bins per feature actually used (quantile edges that coincide are merged)."""
        self._need_fit()
        return tuple(len(e) - 1 for e in self.edges)  # type: ignore[return-value]

    @property
    def n_content(self) -> int:
        a, b, c = self.n_bins
        return a * b * c

    # ---- fitting ----------------------------------------------------------------------------
    def fit(self, jets: ak.Array, *, max_fit_constituents: int | None = 2_000_000, seed: int = 0) -> BinnedTokenizer:
        """Fit quantile bin edges and per-bin medians on (training) jets. If there are more than
        `max_fit_constituents` constituents, a seeded random subset is used for the quantiles."""
        check_jets(jets)
        x, _ = constituent_features(jets, self.max_constituents)
        if len(x) == 0:
            raise DataError("cannot fit a tokenizer on jets without constituents")
        n_total = len(x)
        if max_fit_constituents is not None and len(x) > max_fit_constituents:
            idx = np.random.default_rng(seed).choice(len(x), max_fit_constituents, replace=False)
            x = x[np.sort(idx)]
        edges, centers = [], []
        for f, nb in enumerate(self.n_bins_requested):
            v = x[:, f]
            e = self._fit_edges(v, nb, self.binning[f])
            b = self._digitize(v, e)
            rep = []
            for i in range(len(e) - 1):
                vi = v[b == i]
                if len(vi) == 0:
                    rep.append(0.5 * (e[i] + e[i + 1]))
                elif f == 0:  # log of the mean pt in the bin: unbiased summed pt
                    rep.append(float(np.clip(np.log(np.mean(np.exp(vi))), e[i], e[i + 1])))
                else:
                    rep.append(float(np.median(vi)))
            edges.append(e)
            centers.append(np.asarray(rep, dtype=np.float64))
        self.edges, self.centers = edges, centers
        self.fit_info = {"n_jets": int(len(jets)), "n_constituents": n_total, "n_used": int(len(x)), "seed": seed}
        return self

    def _fit_edges(self, v: np.ndarray, nb: int, kind: str) -> np.ndarray:
        """Increasing bin edges spanning [min(v), max(v)] (coinciding edges merged)."""
        lo, hi = float(v.min()), float(v.max())
        if kind == "quantile":
            e = np.quantile(v, np.linspace(0.0, 1.0, nb + 1))
        elif nb <= 2:
            e = np.linspace(lo, hi, nb + 1)
        else:  # nb - 2 equal bins between the tail quantiles, one tail bin each side
            qlo, qhi = np.quantile(v, [self.tail_quantile, 1 - self.tail_quantile])
            e = np.concatenate([[lo], np.linspace(qlo, qhi, nb - 1), [hi]])
        e = np.unique(e)
        if len(e) < 2:  # a constant feature: one bin around the value
            e = np.array([lo - 0.5, lo + 0.5])
        return e

    @staticmethod
    def _digitize(v: np.ndarray, e: np.ndarray) -> np.ndarray:
        """Bin index of each value: [e_i, e_{i+1}) with the last bin closed; outside -> clipped."""
        return np.clip(np.searchsorted(e, v, side="right") - 1, 0, len(e) - 2)

    # ---- encode / decode --------------------------------------------------------------------
    def bin_indices(self, x: np.ndarray) -> np.ndarray:
        """(n, 3) features -> (n, 3) per-feature bin indices."""
        self._need_fit()
        return np.stack([self._digitize(x[:, f], self.edges[f]) for f in range(3)], axis=1)

    def encode_features(self, x: np.ndarray) -> np.ndarray:
        """(n, 3) features (log pt, eta_rel, phi_rel) -> (n,) content token ids."""
        b = self.bin_indices(x)
        _, nb, nc = self.n_bins
        return (b[:, 0] * nb + b[:, 1]) * nc + b[:, 2]

    def decode_features(self, tokens: np.ndarray) -> np.ndarray:
        """(n,) content token ids -> (n, 3) bin-median features."""
        self._need_fit()
        _, nb, nc = self.n_bins
        t = np.asarray(tokens, dtype=np.int64)
        idx = (t // (nb * nc), (t // nc) % nb, t % nc)
        return np.stack([self.centers[f][idx[f]] for f in range(3)], axis=1)

    def encode_constituents(self, x: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return self.encode_features(x)

    def decode_constituents(self, tokens: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return self.decode_features(tokens)

    # ---- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        self._need_fit()
        return {
            "format": TOKENIZER_FORMAT,
            "version": TOKENIZER_VERSION,
            "kind": "binned",
            "features": list(FEATURES),
            "n_bins_requested": list(self.n_bins_requested),
            "n_bins": list(self.n_bins),
            "binning": list(self.binning),
            "tail_quantile": self.tail_quantile,
            "max_constituents": self.max_constituents,
            "seq_len": self.seq_len,
            "vocab_size": self.vocab_size,
            "special_tokens": {"start": self.start_token, "stop": self.stop_token, "pad": self.pad_token},
            "edges": [e.tolist() for e in self.edges],
            "centers": [c.tolist() for c in self.centers],
            "fit": self.fit_info,
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "tokenizer") -> BinnedTokenizer:
        try:
            if d.get("format") != TOKENIZER_FORMAT:
                raise DataError(f"{where}: not a binned tokenizer file (format {d.get('format')!r})")
            if d.get("version") != TOKENIZER_VERSION:
                raise DataError(f"{where}: tokenizer version {d.get('version')} != {TOKENIZER_VERSION}")
            tok = cls(tuple(d["n_bins_requested"]), int(d["max_constituents"]), tuple(d["binning"]),
                      float(d["tail_quantile"]))
            tok.edges = [np.asarray(e, dtype=np.float64) for e in d["edges"]]
            tok.centers = [np.asarray(c, dtype=np.float64) for c in d["centers"]]
            tok.fit_info = dict(d.get("fit", {}))
            if len(tok.edges) != 3 or any(len(c) != len(e) - 1 for e, c in zip(tok.edges, tok.centers)):
                raise DataError(f"{where}: edges/centers do not match")
            if any(np.any(np.diff(e) <= 0) for e in tok.edges):
                raise DataError(f"{where}: bin edges are not increasing")
            if tok.vocab_size != d["vocab_size"] or tok.pad_token != d["special_tokens"]["pad"]:
                raise DataError(f"{where}: vocab_size/special tokens inconsistent with the bins")
            return tok
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: corrupt tokenizer ({type(e).__name__}: {e})") from None



TOKENIZER_KINDS: dict[str, str] = {
    # kind -> "module:Class" (imported when used: the vq kind needs torch)
    "binned": "scaling_sweeper.data.tokenizer:BinnedTokenizer",
    "vq": "scaling_sweeper.data.vq_tokenizer:VQTokenizer",
}


def tokenizer_class(kind: str) -> type[Tokenizer]:
    """The Tokenizer subclass registered for `kind` (DataError naming the known kinds)."""
    if kind not in TOKENIZER_KINDS:
        raise DataError(f"unknown tokenizer kind {kind!r} (kinds: {', '.join(TOKENIZER_KINDS)})")
    import importlib

    module, name = TOKENIZER_KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def _read_tokenizer_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: tokenizer file missing")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: corrupt tokenizer JSON ({e})") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: corrupt tokenizer JSON (not an object)")
    return d


def tokenizer_kind_of(path: str | Path) -> str:
    """The kind recorded in a tokenizer file (without building the tokenizer)."""
    path = Path(path)
    kind = _read_tokenizer_json(path).get("kind")
    if kind not in TOKENIZER_KINDS:
        raise DataError(f"{path}: unknown tokenizer kind {kind!r} (kinds: {', '.join(TOKENIZER_KINDS)})")
    return kind


def load_tokenizer_file(path: str | Path, kind: str | None = None) -> Tokenizer:
    """Load a tokenizer file of any registered kind; with `kind`, TokenizerKindError if the file
    is of another kind."""
    path = Path(path)
    found = tokenizer_kind_of(path)
    if kind is not None and found != kind:
        raise TokenizerKindError(f"{path}: a {found!r} tokenizer file, not a {kind!r} one")
    return tokenizer_class(found).load(path)


def tokenizer_id(kind: str, sha256: str) -> str:
    """A tokenizer's short name: `<kind>-<first 12 hex of the file's sha256>`."""
    return f"{kind}-{sha256[:12]}"


def tokenizer_info(tokens_dir: str | Path) -> dict:
    """{kind, id, codebook_size, sha256} of a tokens folder's tokenizer, read from its files
    only (no torch, no decoding); TokenizerMismatchError if the file's vocabulary disagrees with
    index.json."""
    from scaling_sweeper.data.shards import ShardIndex, sha256_file

    idx = ShardIndex.load(tokens_dir)
    path = idx.tokenizer_path()
    if path is None:
        raise DataError(f"{tokens_dir}: index.json names no tokenizer")
    d = _read_tokenizer_json(path)
    kind = d.get("kind")
    if kind not in TOKENIZER_KINDS:
        raise DataError(f"{path}: unknown tokenizer kind {kind!r} (kinds: {', '.join(TOKENIZER_KINDS)})")
    sha = idx.tokenizer_sha256 or sha256_file(path)
    vocab = d.get("vocab_size")
    if vocab != idx.vocab_size:
        raise TokenizerMismatchError(
            f"{path}: tokenizer vocabulary {vocab} (codebook {None if vocab is None else vocab - 3}) != "
            f"the shards' vocab_size {idx.vocab_size} in {tokens_dir}/index.json"
        )
    out = {"kind": kind, "id": tokenizer_id(kind, sha), "codebook_size": int(vocab) - 3, "sha256": sha}
    health = tokenizer_health(Path(tokens_dir) / "tokenization_report.json")
    if health:
        out["health"] = health
    return out


def tokenizer_health(report_path: str | Path) -> dict:
    """The few numbers of a tokenization_report.json a results row carries (codebook use,
    per-feature MAE, round-trip SWD vs floor); {} if the report is missing or older."""
    try:
        rep = json.loads(Path(report_path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    out: dict = {}
    cb = rep.get("codebook") or {}
    for k in ("codes_used_frac", "perplexity"):
        if k in cb:
            out[k] = cb[k]
    for f, v in (rep.get("feature_mae") or {}).items():
        out[f"mae_{f}"] = v
    rt = rep.get("roundtrip_swd") or {}
    for k in ("swd_roundtrip", "swd_roundtrip_err", "swd_floor", "swd_floor_err"):
        if rt.get(k) is not None:
            out[k] = rt[k]
    return out


def load_tokenizer(tokens_dir: str | Path, kind: str | None = None) -> Tokenizer:
    """The tokenizer referenced by a tokens folder's index.json, of whatever kind it is (sha256
    checked; TokenizerMismatchError if its vocabulary or sequence length differ from the shards';
    with `kind`, TokenizerKindError if it is another kind)."""
    from scaling_sweeper.data.shards import ShardIndex, sha256_file

    idx = ShardIndex.load(tokens_dir)
    path = idx.tokenizer_path()
    if path is None:
        raise DataError(f"{tokens_dir}: index.json names no tokenizer")
    if not path.is_file():
        raise DataError(f"{path}: tokenizer file missing")
    if idx.tokenizer_sha256 and sha256_file(path) != idx.tokenizer_sha256:
        raise DataError(f"{path}: tokenizer does not match the sha256 in {tokens_dir}/index.json")
    tok = load_tokenizer_file(path, kind)
    if tok.vocab_size != idx.vocab_size or tok.seq_len != idx.seq_len or tok.pad_token != idx.pad_token:
        raise TokenizerMismatchError(
            f"{path}: tokenizer (codebook {tok.codebook_size}, vocab {tok.vocab_size}, seq_len {tok.seq_len}) "
            f"does not match the shards in {tokens_dir} (vocab {idx.vocab_size}, seq_len {idx.seq_len})"
        )
    return tok


def codebook_health(tokens: np.ndarray, n_content: int) -> dict:
    """Usage of the content tokens in (n,) constituent tokens: fraction of the codebook used,
    perplexity exp(H) of the usage distribution (natural log; n_content for uniform use) and
    the largest single-code share."""
    t = np.asarray(tokens, dtype=np.int64)
    counts = np.bincount(t, minlength=n_content).astype(np.float64)
    if counts.sum() == 0:
        return {"codebook_size": int(n_content), "codes_used": 0, "codes_used_frac": 0.0,
                "perplexity": 0.0, "max_code_share": 0.0}
    p = counts / counts.sum()
    nz = p[p > 0]
    return {
        "codebook_size": int(n_content),
        "codes_used": int(len(nz)),
        "codes_used_frac": float(len(nz) / n_content),
        "perplexity": float(np.exp(-np.sum(nz * np.log(nz)))),
        "max_code_share": float(p.max()),
    }


def tokenization_report(tok: Tokenizer, jets: ak.Array) -> dict:
    """How much tokenization alone distorts jets: decode(encode(jets)) vs jets truncated to
    max_constituents. Per-feature mean abs error, RMS error and 50/90/99% quantiles of the abs
    error (the feature resolution) of the round trip, relative change of the jet pt and mass
    (summed from constituents), the fraction of jets/constituents cut by truncation, and the
    codebook health on these jets (`codebook_health`)."""
    check_jets(jets)
    x, counts = constituent_features(jets, tok.max_constituents)
    rows = tok.encode(jets)
    content = rows[:, 1:][(rows[:, 1:] < tok.n_content)].astype(np.int64)  # row-major: jet by jet
    dec = tok.decode(rows)
    x_rt = np.stack([np.log(ak.to_numpy(ak.flatten(dec.part_pt)).astype(np.float64)),
                     ak.to_numpy(ak.flatten(dec.part_eta_rel)).astype(np.float64),
                     ak.to_numpy(ak.flatten(dec.part_phi_rel)).astype(np.float64)], axis=1).reshape(-1, 3)
    n_all = ak.to_numpy(ak.num(jets.part_pt, axis=1))
    order = ak.argsort(jets.part_pt, axis=1, ascending=False, stable=True)
    trunc = jets[["part_pt", "part_eta_rel", "part_phi_rel"]][order][:, : tok.max_constituents]
    truth = constituent_jet_kinematics(trunc)
    rt = constituent_jet_kinematics(dec)

    def rel(a: np.ndarray, b: np.ndarray) -> dict:
        r = (b - a) / np.where(a > 0, a, np.nan)
        r = r[np.isfinite(r)]
        return {"mean": float(np.mean(r)), "std": float(np.std(r)), "mean_abs": float(np.mean(np.abs(r)))}

    err = np.abs(x_rt - x)
    out = {
        "kind": tok.kind,
        "n_jets": int(len(jets)),
        "n_constituents": int(len(x)),
        "vocab_size": tok.vocab_size,
        "codebook_size": tok.codebook_size,
        "feature_mae": {f: float(np.mean(err[:, i])) for i, f in enumerate(FEATURES)},
        "feature_rmse": {f: float(np.sqrt(np.mean(err[:, i] ** 2))) for i, f in enumerate(FEATURES)},
        "feature_abs_err_quantiles": {
            f: dict(zip(("p50", "p90", "p99"), map(float, np.quantile(err[:, i], [0.5, 0.9, 0.99]))))
            for i, f in enumerate(FEATURES)
        } if len(err) else {},
        "pt_rel_mae": float(np.mean(np.abs(np.exp(x_rt[:, 0]) - np.exp(x[:, 0])) / np.exp(x[:, 0]))),
        "jet_pt_rel": rel(truth["pt"], rt["pt"]),
        "jet_mass_rel": rel(truth["mass"], rt["mass"]),
        "truncated_jet_frac": float(np.mean(n_all > tok.max_constituents)) if len(n_all) else 0.0,
        "truncated_constituent_frac": float(1 - counts.sum() / max(int(n_all.sum()), 1)),
        "codebook": codebook_health(content, tok.n_content),
    }
    if isinstance(tok, BinnedTokenizer):
        out["n_bins"] = list(tok.n_bins)
    return out
