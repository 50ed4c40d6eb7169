"""Learned VQ-VAE jet tokenizer (OmniJet-alpha style): one codebook index per constituent.

Model (`VQVAE`): constituent features (log pt/GeV, eta_rel, phi_rel), standardised with the
training constituents' mean/std and weighted (`feature_weights`), go through an encoder over the
jet's constituents (a per-constituent MLP embedding followed by `n_layers` pre-LayerNorm
self-attention blocks over the jet, padding masked; `n_layers=0` is a per-constituent MLP) to a
`latent_dim` vector, which is replaced by its nearest codebook vector (L2, `codebook_size` codes,
default 8192 as in OmniJet-alpha). A decoder of the same shape maps the jet's code vectors back
to the three features. Training loss (per constituent, standardised units):

    MSE(x_hat, x) + MSE(e, sg(z)) + beta * MSE(z, sg(e))      (reconstruction, codebook, commitment)

with the straight-through estimator through the quantiser. The codebook starts from k-means
(`init="kmeans"`, Lloyd iterations on encoder outputs of a seeded sample) or from random
encoder outputs (`init="data"`); every `replace_every` steps the codes no constituent picked
since the last check (dead codes) are re-initialised to random encoder outputs of the current
batch (their Adam moments reset). The reference implementation's affine codebook
re-parameterisation is not used.

Seeded and resumable: batch order, initialisation and dead-code replacement draw from
generators keyed by (seed, step), and a checkpoint (`<work_dir>/vq_train.pt`: weights,
optimizer, usage counters, step) is written every `ckpt_every` steps, so a fit interrupted and
resumed gives the same weights as one uninterrupted run (same device and thread count). The
fitted tokenizer is a versioned JSON file (`kind: vq`) holding the config, the feature
standardisation and the weights (float32, base64), so it is byte-identical for the same fit.
Rows, special tokens and DecodeStats are those of `tokenizer.Tokenizer`.

One concept over ~500 lines: the VQ-VAE tokenizer (model, fit with resume, decoding calibration).
"""

from __future__ import annotations

import base64
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import awkward as ak
import numpy as np
import torch
from torch import nn

from scaling_sweeper.base.errors import ConfigError, DataError
from scaling_sweeper.data.jets import check_jets
from scaling_sweeper.data.tokenizer import MAX_VOCAB, Tokenizer, constituent_features

CKPT_NAME = "vq_train.pt"
INITS = ("kmeans", "data")


@dataclass(frozen=True)
class VQConfig:
    """VQ-VAE tokenizer settings. Defaults are CPU scale (the 30k-jet demo in minutes on 2
    cores); GPU-scale settings: docs/data.md, "The learned VQ tokenizer"."""

    codebook_size: int = 8192  # content tokens (OmniJet-alpha: 8192); vocab = codebook_size + 3
    latent_dim: int = 8  # dimension of the code vectors
    hidden: int = 32  # width of encoder/decoder
    n_layers: int = 1  # self-attention blocks over the jet in encoder and in decoder (0: per-constituent)
    n_heads: int = 2  # attention heads (must divide hidden)
    steps: int = 1000  # optimizer steps
    batch_jets: int = 64  # jets per step
    lr: float = 2e-3  # Adam peak learning rate (linear warmup, cosine decay to lr/10)
    warmup_steps: int = 50
    beta: float = 0.25  # commitment loss weight
    # multiplies each standardised feature (log pt, eta_rel, phi_rel), input and reconstruction
    # target: a larger weight buys finer resolution in that feature at the others' expense;
    # (2, 1, 1) mirrors the binned default's finer log-pt binning (32 vs 16 x 16 bins)
    feature_weights: tuple[float, float, float] = (2.0, 1.0, 1.0)
    init: str = "kmeans"  # codebook initialisation: kmeans | data (random encoder outputs)
    kmeans_iters: int = 10  # Lloyd iterations of the k-means init
    replace_every: int = 10  # steps between dead-code replacements (0: never; OmniJet-alpha: 10)
    ckpt_every: int = 250  # steps between training checkpoints (resume)
    max_constituents: int = 128  # constituents per jet (seq_len = max_constituents + 2)
    device: str = "cpu"  # "cpu" | "cuda[:N]" | "auto" (training, encoding, decoding)
    # after training: per-code decoding offsets measured on up to this many training jets (0: none)
    calib_jets: int = 8000

    def validate(self) -> VQConfig:
        for name in ("codebook_size", "latent_dim", "hidden", "n_heads", "steps", "batch_jets",
                     "kmeans_iters", "ckpt_every", "max_constituents"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"vq.{name} must be >= 1, got {getattr(self, name)}")
        if self.codebook_size + 3 > MAX_VOCAB:
            raise ConfigError(f"vq.codebook_size {self.codebook_size} gives a vocabulary over {MAX_VOCAB} (uint16)")
        if self.n_layers < 0 or self.warmup_steps < 0 or self.replace_every < 0 or self.calib_jets < 0:
            raise ConfigError("vq.n_layers, vq.warmup_steps, vq.replace_every and vq.calib_jets must be >= 0")
        if self.hidden % self.n_heads:
            raise ConfigError(f"vq.n_heads {self.n_heads} must divide vq.hidden {self.hidden}")
        if not self.lr > 0 or self.beta < 0:
            raise ConfigError("vq.lr must be > 0 and vq.beta >= 0")
        if len(self.feature_weights) != 3 or not all(w > 0 for w in self.feature_weights):
            raise ConfigError(f"vq.feature_weights must be 3 positive numbers, got {self.feature_weights}")
        if self.init not in INITS:
            raise ConfigError(f"vq.init must be one of {INITS}, got {self.init!r}")
        if not (self.device in ("cpu", "auto") or self.device.startswith("cuda")):
            raise ConfigError(f"vq.device {self.device!r} must be cpu, cuda[:N] or auto")
        return self


# ------------------------------------------------------------------------------------ model
class _Block(nn.Module):
    """Pre-LayerNorm self-attention + MLP block over a jet's constituents (padding masked)."""

    def __init__(self, hidden: int, n_heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, n_heads, batch_first=True)
        self.ln2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden))

    def forward(self, h: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        a = self.ln1(h)
        h = h + self.attn(a, a, a, key_padding_mask=pad, need_weights=False)[0]
        return h + self.mlp(self.ln2(h))


class _Stack(nn.Module):
    """in -> hidden (MLP) -> n_layers blocks -> LayerNorm -> out."""

    def __init__(self, d_in: int, d_out: int, hidden: int, n_layers: int, n_heads: int):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(_Block(hidden, n_heads) for _ in range(n_layers))
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, d_out))

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        if len(self.blocks):
            pad = pad.clone()
            pad[:, 0] = False  # an empty row attends to its first slot (output discarded), never to nothing
            for b in self.blocks:
                h = b(h, pad)
        return self.head(h)


class VQVAE(nn.Module):
    """Encoder, codebook and decoder; see the module docstring."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.encoder = _Stack(3, cfg.latent_dim, cfg.hidden, cfg.n_layers, cfg.n_heads)
        self.decoder = _Stack(cfg.latent_dim, 3, cfg.hidden, cfg.n_layers, cfg.n_heads)
        self.codebook = nn.Parameter(torch.randn(cfg.codebook_size, cfg.latent_dim) * 0.1)

    @torch.no_grad()
    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """(n, d) latents -> (n,) index of the nearest code (L2; ties to the lowest index)."""
        return _nearest(z.detach(), self.codebook.detach())


def _nearest(z: torch.Tensor, c: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """(n,) index of the nearest row of c (k, d) for each row of z (n, d): argmin of
    |c|^2 - 2 z.c, in row chunks so the (chunk, k) distance block stays small (cache-sized)."""
    c2 = (c * c).sum(1)
    out = [torch.argmin(torch.addmm(c2[None, :], zc, c.T, alpha=-2.0), dim=1) for zc in z.split(chunk)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=z.device)


def _kmeans(x: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> torch.Tensor:
    """(k, d) Lloyd k-means centres of x, started from k random points of x (with replacement and
    tiny jitter if x has fewer than k points); empty clusters keep their centre."""
    n = len(x)
    idx = torch.randperm(n, generator=gen)[:k] if n >= k else torch.randint(n, (k,), generator=gen)
    c = x[idx.to(x.device)].clone()
    if n < k:
        c += 1e-3 * x.std(0) * torch.randn(c.shape, generator=gen).to(x.device)
    for _ in range(iters):
        a = _nearest(x, c)
        s = torch.zeros_like(c).index_add_(0, a, x)
        m = torch.bincount(a, minlength=k).to(x.dtype)
        c = torch.where(m[:, None] > 0, s / m.clamp(min=1)[:, None], c)
    return c


# ------------------------------------------------------------------------------------ data
def _padded(x: np.ndarray, counts: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat (n, f) values of jets with `counts` -> (n_jets, length, f) zero-padded + (n_jets, length) pad mask."""
    n_jets = len(counts)
    out = np.zeros((n_jets, length, x.shape[1]), dtype=np.float32)
    pad = np.ones((n_jets, length), dtype=bool)
    rows = np.repeat(np.arange(n_jets), counts)
    cols = np.arange(len(x)) - np.repeat(np.cumsum(counts) - counts, counts)
    out[rows, cols] = x
    pad[rows, cols] = False
    return out, pad


def _to_b64(a: torch.Tensor) -> dict:
    arr = a.detach().cpu().contiguous().to(torch.float32).numpy()
    return {"shape": list(arr.shape), "float32_b64": base64.b64encode(arr.astype("<f4").tobytes()).decode()}


def _from_b64(d: dict) -> torch.Tensor:
    arr = np.frombuffer(base64.b64decode(d["float32_b64"]), dtype="<f4").reshape(d["shape"])
    return torch.from_numpy(arr.copy())


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"vq.device {name!r}: CUDA is not available here")
    return torch.device(name)


# ------------------------------------------------------------------------------------ tokenizer
class VQTokenizer(Tokenizer):
    """A fitted VQ-VAE as a jet tokenizer; see the module docstring."""

    kind = "vq"
    FORMAT = "scaling_sweeper.vq_tokenizer"
    VERSION = 1

    def __init__(self, cfg: VQConfig | None = None):
        self.cfg = (cfg or VQConfig()).validate()
        self.max_constituents = self.cfg.max_constituents
        self.model: VQVAE | None = None
        self.mean = np.zeros(3)
        self.std = np.ones(3)
        self.offset: np.ndarray | None = None  # (codebook_size, 3) decoding calibration, or None
        self.fit_info: dict = {}

    @classmethod
    def from_config(cls, cfg) -> VQTokenizer:
        """From a dataset.TokenizeConfig (its `vq` settings and max_constituents)."""
        from dataclasses import replace

        if isinstance(cfg.vq, VQConfig):
            vq = cfg.vq
        else:
            d = dict(cfg.vq or {})
            if "feature_weights" in d:
                d["feature_weights"] = tuple(d["feature_weights"])
            vq = VQConfig(**d)
        return cls(replace(vq, max_constituents=cfg.max_constituents))

    @property
    def fitted(self) -> bool:
        return self.model is not None

    @property
    def n_content(self) -> int:
        return self.cfg.codebook_size

    # ---- fitting ----------------------------------------------------------------------------
    def fit(self, jets: ak.Array, *, seed: int = 0, work_dir: str | Path | None = None,
            stop_at: int | None = None, verbose: bool = False) -> VQTokenizer:
        """Train the VQ-VAE on (training) jets. With `work_dir`, checkpoints go to
        work_dir/vq_train.pt every cfg.ckpt_every steps and a matching checkpoint there (same
        config, seed and jets) is resumed. `stop_at`: stop after that many steps (the
        checkpoint is written; a later fit resumes) -- for time-limited jobs and tests."""
        cfg = self.cfg
        check_jets(jets)
        x, counts = constituent_features(jets, cfg.max_constituents)
        keep = counts > 0
        if not keep.any():
            raise DataError("cannot fit a tokenizer on jets without constituents")
        mean, std = x.mean(0), x.std(0)
        std = np.where(std > 0, std, 1.0) / np.asarray(cfg.feature_weights, dtype=np.float64)
        xs = ((x - mean) / std).astype(np.float32)
        fingerprint = {"n_jets": int(len(counts)), "n_constituents": int(len(x)),
                       "sum": [float(v) for v in x.sum(0)], "seed": int(seed)}
        dev = _device(cfg.device)
        torch.manual_seed(seed)
        model = VQVAE(cfg).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        usage = torch.zeros(cfg.codebook_size, dtype=torch.long, device=dev)
        step, history, wall0 = 0, [], 0.0
        ckpt = Path(work_dir) / CKPT_NAME if work_dir is not None else None
        meta = {"config": asdict(cfg), "fingerprint": fingerprint}
        if ckpt is not None and ckpt.is_file():
            try:
                # tensors and plain values only: a pickle planted in the folder cannot run code here
                state = torch.load(ckpt, map_location=dev, weights_only=True)
            except Exception as e:  # noqa: BLE001 (a torn or foreign file: start over)
                state = None
                print(f"vq: ignoring checkpoint {ckpt}: not a readable tensors-only checkpoint "
                      f"({type(e).__name__}); training from the start", file=sys.stderr)
            if isinstance(state, dict) and state.get("meta") == json.loads(json.dumps(meta)):
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["opt"])
                usage = state["usage"].to(dev)
                step, history, wall0 = int(state["step"]), list(state["history"]), float(state["wall_s"])
                if verbose:
                    print(f"vq: resumed {ckpt} at step {step}/{cfg.steps}")
        jet_idx = np.flatnonzero(keep)
        starts = np.cumsum(counts) - counts
        t0 = time.perf_counter()

        def batch(step_: int, stream: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
            rng = np.random.default_rng([seed, step_, stream])
            sel = np.sort(rng.choice(jet_idx, min(cfg.batch_jets, len(jet_idx)), replace=False))
            c = counts[sel]
            flat = np.concatenate([np.arange(s, s + n) for s, n in zip(starts[sel], c)])
            xb, pad = _padded(xs[flat], c, int(c.max()))
            return torch.from_numpy(xb).to(dev), torch.from_numpy(pad).to(dev)

        if step == 0:
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + 7)
            with torch.no_grad():
                zs = []
                n_need, s_ = max(4 * cfg.codebook_size, 20_000), 0
                while sum(len(z) for z in zs) < n_need and s_ < 64:
                    xb, pad = batch(s_, stream=2)
                    zs.append(model.encoder(xb, pad)[~pad])
                    s_ += 1
                z = torch.cat(zs)
                if cfg.init == "kmeans":
                    model.codebook.data.copy_(_kmeans(z, cfg.codebook_size, cfg.kmeans_iters, gen))
                else:
                    pick = torch.randint(len(z), (cfg.codebook_size,), generator=gen).to(dev)
                    model.codebook.data.copy_(z[pick])
        model.train()
        while step < cfg.steps and (stop_at is None or step < stop_at):
            lr = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
            if step >= cfg.warmup_steps:
                frac = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
                lr = cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
            for g in opt.param_groups:
                g["lr"] = lr
            xb, pad = batch(step)
            valid = ~pad
            z = model.encoder(xb, pad)[valid]
            idx = model.nearest(z)
            e = model.codebook[idx]
            l_cb = torch.mean((e - z.detach()) ** 2)
            l_commit = torch.mean((z - e.detach()) ** 2)
            zq = torch.zeros(*pad.shape, cfg.latent_dim, device=dev, dtype=z.dtype)
            zq[valid] = z + (e - z).detach()
            l_rec = torch.mean((model.decoder(zq, pad)[valid] - xb[valid]) ** 2)
            loss = l_rec + l_cb + cfg.beta * l_commit
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            usage += torch.bincount(idx, minlength=cfg.codebook_size)
            step += 1
            n_replaced = 0
            if cfg.replace_every and step % cfg.replace_every == 0 and step < cfg.steps:
                n_replaced = self._replace_dead(model, opt, usage, z.detach(), seed, step)
                usage.zero_()
            if step % max(1, cfg.steps // 50) == 0 or step == cfg.steps:
                history.append({"step": step, "loss": float(loss.detach()), "rec": float(l_rec.detach()),
                                "commit": float(l_commit.detach()), "replaced": n_replaced})
                if verbose and (step % max(1, cfg.steps // 10) == 0 or step == cfg.steps):
                    print(f"vq: step {step}/{cfg.steps} rec {history[-1]['rec']:.4f} commit {history[-1]['commit']:.4f}")
            if ckpt is not None and (step % cfg.ckpt_every == 0 or step == cfg.steps
                                     or (stop_at is not None and step == stop_at)):
                self._save_ckpt(ckpt, model, opt, usage, step, history,
                                wall0 + time.perf_counter() - t0, meta)
        model.eval()
        self.model = model.cpu()
        self.mean, self.std = mean, std
        self.fit_info = {"n_jets": int(len(counts)), "n_constituents": int(len(x)), "seed": int(seed),
                         "steps_done": int(step), "device": str(dev),
                         "train_wall_s": round(wall0 + time.perf_counter() - t0, 3),
                         "history": history[-10:]}
        if step < cfg.steps:
            self.fit_info["interrupted_at"] = int(step)
        elif cfg.calib_jets:
            self._calibrate(x, counts, seed)
        return self

    CALIB_PRIOR = 5.0  # constituents: a code seen n times gets n / (n + CALIB_PRIOR) of its offset

    def _calibrate(self, x: np.ndarray, counts: np.ndarray, seed: int) -> None:
        """Per-code decoding offsets, so that decoded jets are unbiased where the VQ-VAE's are not:
        on a seeded sample of training jets, each code's (eta_rel, phi_rel) offset is the mean
        residual (true - decoded) of the constituents it encodes, and its log-pt offset is
        log(sum pt_true / sum pt_decoded): jet pT is a sum of pT, and exp of a mean log is
        biased low (Jensen). Shrunk by n / (n + CALIB_PRIOR) for codes seen n times."""
        self.offset = None
        rng = np.random.default_rng([seed, 7])
        k = min(self.cfg.calib_jets, len(counts))
        sel = np.sort(rng.choice(len(counts), k, replace=False))
        starts = np.cumsum(counts) - counts
        rows = np.concatenate([np.arange(starts[j], starts[j] + counts[j]) for j in sel]) if k else np.array([], int)
        if not len(rows):
            return
        xs, cs = x[rows], counts[sel]
        codes = self.encode_constituents(xs, cs)
        xh = self.decode_constituents(codes, cs)
        K = self.n_content
        n = np.bincount(codes, minlength=K).astype(np.float64)
        off = np.zeros((K, 3))
        for f in (1, 2):
            off[:, f] = np.bincount(codes, weights=xs[:, f] - xh[:, f], minlength=K) / np.maximum(n, 1.0)
        num = np.bincount(codes, weights=np.exp(xs[:, 0]), minlength=K)
        den = np.bincount(codes, weights=np.exp(xh[:, 0]), minlength=K)
        off[:, 0] = np.where((num > 0) & (den > 0), np.log(np.maximum(num, 1e-300) / np.maximum(den, 1e-300)), 0.0)
        self.offset = (off * (n / (n + self.CALIB_PRIOR))[:, None]).astype(np.float32)
        self.fit_info["calibration"] = {"jets": int(k), "constituents": int(len(rows)),
                                        "codes_seen": int((n > 0).sum())}

    @staticmethod
    def _replace_dead(model: VQVAE, opt: torch.optim.Optimizer, usage: torch.Tensor, z: torch.Tensor,
                      seed: int, step: int) -> int:
        """Re-initialise codes unused since the last check to random latents of this batch."""
        dead = torch.nonzero(usage == 0).flatten()
        if len(dead) == 0 or len(z) == 0:
            return 0
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + step)
        pick = torch.randint(len(z), (len(dead),), generator=gen).to(z.device)
        noise = 0.01 * z.std(0) * torch.randn(len(dead), z.shape[1], generator=gen).to(z.device)
        with torch.no_grad():
            model.codebook.data[dead] = z[pick] + noise
        st = opt.state.get(model.codebook)
        if st:
            st["exp_avg"][dead] = 0
            st["exp_avg_sq"][dead] = 0
        return int(len(dead))

    @staticmethod
    def _save_ckpt(path: Path, model, opt, usage, step, history, wall_s, meta) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"meta": json.loads(json.dumps(meta)), "model": model.state_dict(), "opt": opt.state_dict(),
                    "usage": usage.cpu(), "step": step, "history": history, "wall_s": wall_s}, tmp)
        tmp.replace(path)

    # ---- encode / decode --------------------------------------------------------------------
    def _run_device(self) -> torch.device:
        return _device(self.cfg.device)

    @torch.no_grad()
    def encode_constituents(self, x: np.ndarray, counts: np.ndarray, chunk_jets: int = 1024) -> np.ndarray:
        self._need_fit()
        dev = self._run_device()
        model = self.model.to(dev)
        xs = ((np.asarray(x, dtype=np.float64) - self.mean) / self.std).astype(np.float32)
        counts = np.asarray(counts, dtype=np.int64)
        out = np.zeros(len(xs), dtype=np.int64)
        starts = np.cumsum(counts) - counts
        for j in range(0, len(counts), chunk_jets):
            c = counts[j:j + chunk_jets]
            if c.sum() == 0:
                continue
            lo = starts[j]
            xb, pad = _padded(xs[lo:lo + c.sum()], c, int(c.max()))
            pad_t = torch.from_numpy(pad).to(dev)
            z = model.encoder(torch.from_numpy(xb).to(dev), pad_t)[~pad_t]
            out[lo:lo + c.sum()] = model.nearest(z).cpu().numpy()
        return out

    @torch.no_grad()
    def decode_constituents(self, tokens: np.ndarray, counts: np.ndarray, chunk_jets: int = 1024) -> np.ndarray:
        self._need_fit()
        dev = self._run_device()
        model = self.model.to(dev)
        t = np.asarray(tokens, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        if len(t) and (t.min() < 0 or t.max() >= self.n_content):
            raise DataError(f"content tokens must be in [0, {self.n_content}), got [{t.min()}, {t.max()}]")
        out = np.zeros((len(t), 3), dtype=np.float64)
        starts = np.cumsum(counts) - counts
        cb = model.codebook.detach()
        for j in range(0, len(counts), chunk_jets):
            c = counts[j:j + chunk_jets]
            if c.sum() == 0:
                continue
            lo = starts[j]
            tb, pad = _padded(t[lo:lo + c.sum(), None].astype(np.float32), c, int(c.max()))
            pad_t = torch.from_numpy(pad).to(dev)
            e = cb[torch.from_numpy(tb[..., 0].astype(np.int64)).to(dev)]
            xh = model.decoder(e, pad_t)[~pad_t].cpu().numpy().astype(np.float64)
            out[lo:lo + c.sum()] = xh * self.std + self.mean
        if self.offset is not None:
            out += self.offset[t]
        return out

    # ---- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        self._need_fit()
        return {
            "format": self.FORMAT,
            "version": self.VERSION,
            "kind": self.kind,
            "features": ["log_pt", "eta_rel", "phi_rel"],
            "config": asdict(self.cfg),
            "max_constituents": self.max_constituents,
            "seq_len": self.seq_len,
            "vocab_size": self.vocab_size,
            "codebook_size": self.codebook_size,
            "special_tokens": {"start": self.start_token, "stop": self.stop_token, "pad": self.pad_token},
            "standardise": {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]},
            "weights": {k: _to_b64(v) for k, v in self.model.state_dict().items()},
            "fit": self.fit_info,
        } | ({"calibration": _to_b64(torch.from_numpy(self.offset))} if self.offset is not None else {})

    @classmethod
    def from_dict(cls, d: dict, where: str = "tokenizer") -> VQTokenizer:
        try:
            if d.get("format") != cls.FORMAT:
                raise DataError(f"{where}: not a vq tokenizer file (format {d.get('format')!r})")
            if d.get("version") != cls.VERSION:
                raise DataError(f"{where}: vq tokenizer version {d.get('version')} != {cls.VERSION}")
            c = dict(d["config"])
            c["feature_weights"] = tuple(c.get("feature_weights", (1.0, 1.0, 1.0)))
            cfg = VQConfig(**c).validate()
            tok = cls(cfg)
            model = VQVAE(cfg)
            model.load_state_dict({k: _from_b64(v) for k, v in d["weights"].items()})
            model.eval()
            tok.model = model
            tok.mean = np.asarray(d["standardise"]["mean"], dtype=np.float64)
            tok.std = np.asarray(d["standardise"]["std"], dtype=np.float64)
            tok.fit_info = dict(d.get("fit", {}))
            if "calibration" in d:  # files fitted before the calibration have none
                tok.offset = _from_b64(d["calibration"]).numpy().astype(np.float32)
                if tok.offset.shape != (cfg.codebook_size, 3):
                    raise ValueError(f"calibration shape {tok.offset.shape} != ({cfg.codebook_size}, 3)")
            if tok.vocab_size != d["vocab_size"] or tok.pad_token != d["special_tokens"]["pad"]:
                raise DataError(f"{where}: vocab_size/special tokens inconsistent with the codebook")
            return tok
        except (KeyError, TypeError, ValueError, RuntimeError, ConfigError) as e:
            raise DataError(f"{where}: corrupt vq tokenizer ({type(e).__name__}: {e})") from None
