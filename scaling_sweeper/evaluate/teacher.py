"""Teacher-generated jets whose irreducible loss is exactly known: `sweeper data make --source teacher`.

One concept over ~600 lines (a fifth of them this description): teacher data from the trained
cell to the dataset folder: exact sampling, the entropy and its error, the chunked resumable make
and the folder it writes.

A trained cell (the teacher) defines a distribution over token rows. A row is [start, x_1, x_2,
...]: x_t is drawn from q(x_t | x_<t), the teacher's softmax with the start and pad tokens removed
and the rest renormalised (`generate.generate` never samples them: the model never sees them as
targets), until the stop token or the end of the row (seq_len positions; a row that reaches the
end without a stop token is kept as sampled). Sampling is exact: temperature 1, no top-k, the
model and its logits in float64 and float64 uniforms (`generate(uniform_dtype=float64)`), so each
token's probability is the model's to ~1e-16.

What the loss converges to. Training and validation count the cross-entropy of every non-pad
target of a row, row[1:] predicted from row[:-1] (the constituents and the stop token; padding
ignored: `batches.rows_to_xy`), and the validation loss is the sum over the validation rows'
targets divided by their number (`position_loss.PositionLoss.loss`). A student that has learned q
therefore has the validation loss

    H = E[ sum_t -log q(x_t | x_<t) ] / E[ number of non-pad targets ]   (nats per non-pad token)

(the expectation over rows drawn from the teacher), the entropy of the row distribution per
token counted as training counts them. It is estimated by the same ratio over every sampled row
(train, val and test: all are independent draws), with the teacher's own float64 -log q at every
target (a teacher-forced pass over the sampled rows), and its standard error by the delta method
over rows (`position_loss.ratio_error`: rows are independent). Per position: the mean -log q of
constituent p over the rows that have it and of the stop token (the layout of the `positions`
table), with the standard error of each mean. The teacher's own validation loss on its rows,
computed as training does (softmax over all tokens), exceeds H by the mean -log(1 - q_banned),
the probability it leaves on start and pad; that excess is recorded too (`teacher_loss_excess`).

Layout of the output folder (like any dataset folder; evaluation reads the splits beside tokens/):

    <out>/chunks/chunk-NNNNN.{parquet,json}  per chunk: token rows in split order (train | val |
              test, data/chunks.split_order), each row's summed -log q, non-pad targets and banned
              log-mass; the marker holds the per-position sums. Chunk i samples with the seed
              chunk_seed(seed, i), so the data do not depend on the number of workers; a killed
              make resumes by making only the missing chunks (data/chunks.py).
    <out>/{train,val,test}.parquet  the decoded jets of the rows that decode cleanly (a stop token,
              at least one constituent): the "real" jets of the physics evaluation, so a student
              that equals the teacher scores the SWD floor
    <out>/tokens/  index.json (+ `data_entropy`, data/known_entropy.py), the token shards of
              the sampled rows (not re-encoded from the jets), tokenizer.json (a copy of the
              teacher's, sha256-checked), teacher_nll_val.npy
    <out>/manifest.json  written last: its presence with the same arguments makes a make a no-op

Layering: this module needs a trained model (train.load_model) and sampling (evaluate.generate),
so it sits in the evaluate layer; the data layer only reads the result (data/known_entropy.py).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scaling_sweeper.base.errors import CheckpointError, ConfigError, DataError
from scaling_sweeper.base.runfolder import atomic_write, atomic_write_json, read_status
from scaling_sweeper.data.chunks import (
    chunk_splits,
    finished_markers,
    make_lock,
    part_path,
    read_chunk,
    split_order,
    write_marker,
)
from scaling_sweeper.data.known_entropy import INDEX_KEY, VAL_NLL_FILE
from scaling_sweeper.data.pythia import DEFAULT_CHUNK_JETS, chunk_quotas, chunk_seed
from scaling_sweeper.data.shards import SPLITS, ShardWriter, sha256_file
from scaling_sweeper.data.tasks import ChunkProgress, run_tasks
from scaling_sweeper.train.checkpoint import list_checkpoints, load_checkpoint

TEACHER_FORMAT = 1
NLL_POSITIONS = 1024  # targets per teacher-forced logits block (float64: 8 MB per 1k vocabulary)


@dataclass(frozen=True)
class RowLayout:
    """The token ids and row length sampling needs (what `generate` reads from a tokenizer)."""

    start_token: int
    stop_token: int
    pad_token: int
    seq_len: int


@dataclass(frozen=True)
class Teacher:
    """A resolved, verified teacher: the checkpoint and the data it was trained on."""

    run_dir: Path
    checkpoint: Path
    sha256: str  # of the checkpoint file
    step: int
    size: str
    tokens_dir: Path  # the teacher's training tokens folder (its tokenizer is copied)
    tokenizer_file: Path
    vocab_size: int
    layout: RowLayout

    def info(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "checkpoint": str(self.checkpoint), "sha256": self.sha256,
                "step": self.step, "size": self.size, "tokens_dir": str(self.tokens_dir)}


@dataclass(frozen=True)
class TeacherDataConfig:
    """What `make_teacher_dataset` makes. Fields but workers, device, batch_size and threads form
    the cache key (those four do not change the rows)."""

    teacher: str  # run folder (STATUS=done, newest checkpoint) or a checkpoint file in <run>/checkpoints/
    n_jets: int = 20000  # rows sampled (all splits)
    seed: int = 0  # master seed: chunk i samples with chunk_seed(seed, i), its split shuffle with (seed, i)
    workers: int = 1  # local processes running chunks
    chunk_jets: int = DEFAULT_CHUNK_JETS  # rows per chunk: the unit of work and of resume
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test fractions
    device: str = "cpu"  # cpu | cuda[:N] | auto: where the teacher samples
    batch_size: int | None = None  # rows per sampling batch (None: generate's choice)
    threads: int = 0  # torch threads per worker (0: 1 with workers > 1, else torch's default)
    rows_per_shard: int | None = None  # token rows per shard file (None: ~1 GiB shards)

    def validate(self) -> TeacherDataConfig:
        if self.n_jets < 1:
            raise ConfigError(f"n_jets must be >= 1, got {self.n_jets}")
        if self.workers < 1 or self.chunk_jets < 1 or self.threads < 0:
            raise ConfigError("workers and chunk_jets must be >= 1, threads >= 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.rows_per_shard is not None and self.rows_per_shard < 1:
            raise ConfigError(f"rows_per_shard must be >= 1, got {self.rows_per_shard}")
        f = self.splits
        if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1.0) > 1e-9 or f[0] <= 0:
            raise ConfigError(f"splits must be 3 fractions (train > 0, val, test) summing to 1, got {f}")
        if not (self.device in ("cpu", "auto") or self.device.startswith("cuda")):
            raise ConfigError(f"device {self.device!r} must be cpu, cuda[:N] or auto")
        return self


@dataclass(frozen=True)
class TeacherChunkTask:
    """Everything that determines one chunk's rows (duck-types data/chunks.ChunkTask)."""

    index: int
    n_jets: int
    seed: int  # generate's seed for this chunk: chunk_seed(master seed, index)
    splits: tuple[float, float, float]
    split_seed: int  # master seed: the chunk's split shuffle uses (split_seed, index)
    checkpoint: str  # absolute path of the teacher checkpoint
    checkpoint_sha256: str
    layout: tuple[int, int, int, int]  # start, stop, pad, seq_len
    source: str = "teacher"

    def key(self) -> dict:
        d = asdict(self)
        d["splits"], d["layout"] = list(self.splits), list(self.layout)
        d.pop("checkpoint")  # the teacher is its sha256: a moved run folder keeps its chunks
        return json.loads(json.dumps(d))


# ------------------------------------------------------------------------------ the teacher
def resolve_teacher(path: str | Path) -> Teacher:
    """Check a teacher before any compute: a run folder that finished (STATUS=done; its newest
    checkpoint) or a checkpoint file `<run>/checkpoints/step_*.pt` (any step, also of an
    unfinished run); the checkpoint must load and verify (no fallback to an older one) and the
    teacher's tokens folder and tokenizer must exist and match the model. DataError /
    CheckpointError / ConfigError naming the problem."""
    from scaling_sweeper.base.config import from_dict, load_yaml
    from scaling_sweeper.data.tokenizer import load_tokenizer
    from scaling_sweeper.train.config import TrainConfig

    p = Path(path)
    if not p.exists():
        raise DataError(f"teacher {p}: no such run folder or checkpoint")
    if p.is_file():
        run_dir = p.parent.parent
        if p.parent.name != "checkpoints" or not (run_dir / "config.yaml").is_file():
            raise DataError(f"teacher {p}: a checkpoint must lie in <run folder>/checkpoints/ beside config.yaml")
        matches = [(s, c) for s, c in list_checkpoints(p.parent) if c.name == p.name]
        if not matches:
            raise CheckpointError(f"teacher {p}: not a checkpoint file name (step_XXXXXXXX.pt)")
        step, ckpt = matches[0]
    else:
        run_dir = p
        if not (run_dir / "config.yaml").is_file():
            raise DataError(f"teacher {run_dir}: not a run folder (no config.yaml)")
        status = read_status(run_dir)
        if status != "done":
            raise ConfigError(f"teacher {run_dir}: unfinished run (STATUS={status}); train it to the end, or "
                              "pass one of its checkpoints/step_*.pt to use that step")
        ckpts = list_checkpoints(run_dir / "checkpoints")
        if not ckpts:
            raise CheckpointError(f"teacher {run_dir}: no checkpoint in {run_dir / 'checkpoints'}")
        step, ckpt = ckpts[-1]
    payload = load_checkpoint(ckpt)  # CheckpointError for a corrupt file (never an older one instead)
    stored = load_yaml(run_dir / "config.yaml")
    derived = stored.pop("derived", {}) or {}
    try:
        cfg = from_dict(TrainConfig, stored)
    except ConfigError as e:
        raise ConfigError(f"teacher {run_dir}/config.yaml: {e}") from None
    tokens_dir = Path(cfg.data)
    if not (tokens_dir / "index.json").is_file():
        raise DataError(f"teacher {run_dir}: its tokens folder {tokens_dir} is missing (the tokenizer is "
                        "taken from it); run from the folder the teacher was trained in")
    tok = load_tokenizer(tokens_dir)
    sd = payload["state"]["model"]
    wte = next((v for k, v in sd.items() if k.endswith("transformer.wte.weight")), None)
    wpe = next((v for k, v in sd.items() if k.endswith("transformer.wpe.weight")), None)
    vocab = int(derived.get("vocab_size") or (wte.shape[0] if wte is not None else -1))
    block = int(derived.get("block_size") or (wpe.shape[0] if wpe is not None else -1))
    if vocab != tok.vocab_size or block != tok.seq_len - 1:
        raise DataError(f"teacher {run_dir}: model (vocab {vocab}, context {block}) does not match its "
                        f"tokenizer (vocab {tok.vocab_size}, seq_len {tok.seq_len})")
    from scaling_sweeper.data.shards import ShardIndex

    return Teacher(run_dir=run_dir.resolve(), checkpoint=ckpt.resolve(), sha256=sha256_file(ckpt), step=step,
                   size=cfg.size, tokens_dir=tokens_dir.resolve(),
                   tokenizer_file=ShardIndex.load(tokens_dir).tokenizer_path().resolve(), vocab_size=tok.vocab_size,
                   layout=RowLayout(tok.start_token, tok.stop_token, tok.pad_token, tok.seq_len))


_MODELS: dict[tuple[str, str], Any] = {}  # (sha256, device) -> float64 teacher, per process


def load_teacher_model(checkpoint: str | Path, sha256: str, device: str = "cpu"):
    """The teacher GPT in float64 and eval mode, from `checkpoint` whose file must hash to
    `sha256` (DataError if it changed since the make was planned). Cached per process."""
    import torch

    from scaling_sweeper.train.checkpoint import load_model

    key = (sha256, str(device))
    if key not in _MODELS:
        ckpt = Path(checkpoint)
        if not ckpt.is_file() or sha256_file(ckpt) != sha256:
            raise DataError(f"teacher checkpoint {ckpt} is missing or changed since this make started")
        step = next(s for s, c in list_checkpoints(ckpt.parent) if c.name == ckpt.name)
        model, _ = load_model(ckpt.parent.parent, device=device, step=step)
        _MODELS.clear()
        _MODELS[key] = model.to(torch.float64).eval()
    return _MODELS[key]


def target_nll(model, rows: np.ndarray, layout: RowLayout, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced float64 losses of token rows (n, seq_len): (nll, excess), both (n, seq_len-1)
    and 0 at padding targets. nll = -log q(target) with q the softmax without the start and pad
    tokens (the distribution the rows were sampled from); excess = -log(1 - p(start) - p(pad)) of
    the full softmax, so nll + excess is the cross-entropy training computes."""
    import torch

    device = next(model.parameters()).device
    banned = [layout.start_token, layout.pad_token]
    t = torch.from_numpy(np.asarray(rows).astype(np.int64))
    nll = np.zeros((t.shape[0], t.shape[1] - 1))
    excess = np.zeros_like(nll)
    with torch.no_grad():
        for i in range(0, t.shape[0], batch_size):
            x, y = t[i : i + batch_size, :-1].to(device), t[i : i + batch_size, 1:].to(device)
            keep = y != layout.pad_token  # (B, T)
            h = model.hidden(x)[keep]  # (n_kept, C)
            yk = y[keep]
            out_n = torch.empty(len(yk), dtype=torch.float64, device=device)
            out_e = torch.empty_like(out_n)
            for j in range(0, len(yk), NLL_POSITIONS):
                logits = model.lm_head(h[j : j + NLL_POSITIONS]).to(torch.float64)  # (k, V)
                lse_all = torch.logsumexp(logits, -1)
                logits[:, banned] = -math.inf
                lse = torch.logsumexp(logits, -1)
                out_n[j : j + NLL_POSITIONS] = lse - logits.gather(1, yk[j : j + NLL_POSITIONS, None]).squeeze(1)
                out_e[j : j + NLL_POSITIONS] = lse_all - lse
            k = keep.cpu().numpy()
            nll[i : i + batch_size][k] = out_n.cpu().numpy()
            excess[i : i + batch_size][k] = out_e.cpu().numpy()
    return nll, excess


def sample_rows(model, n: int, seed: int, layout: RowLayout, batch_size: int | None = None) -> np.ndarray:
    """n token rows (n, seq_len) uint16 drawn exactly from the float64 teacher (module doc)."""
    import torch

    from scaling_sweeper.evaluate.generate import generate

    return generate(model, n, tokenizer=layout, temperature=1.0, top_k=None, seed=seed, batch_size=batch_size,
                    use_cache=True, compile=False, uniform_dtype=torch.float64)


# ------------------------------------------------------------------------------ chunks
def _position_stats(nll: np.ndarray, keep: np.ndarray) -> dict[str, Any]:
    """Per-position sums, sums of squares and counts of a chunk (position_loss layout)."""
    from scaling_sweeper.train.position_loss import position_sums

    s, q = position_sums(nll, keep), position_sums(nll * nll, keep)
    return {"sum": s.pos_sum.tolist(), "sumsq": q.pos_sum.tolist(), "count": s.pos_count.tolist(),
            "stop_sum": s.stop_sum, "stop_sumsq": q.stop_sum, "stop_count": s.stop_count}


def make_teacher_chunk(task: TeacherChunkTask, out: str, runtime: dict) -> dict:
    """Sample chunk `task.index` and write its part and marker in `out` (runs in any process;
    the rows depend on `task` only). runtime: device, batch_size, threads."""
    import awkward as ak
    import torch

    t0, c0 = time.perf_counter(), time.process_time()
    if runtime.get("threads"):
        torch.set_num_threads(int(runtime["threads"]))
    layout = RowLayout(*task.layout)
    model = load_teacher_model(task.checkpoint, task.checkpoint_sha256, runtime.get("device", "cpu"))
    rows = sample_rows(model, task.n_jets, task.seed, layout, runtime.get("batch_size"))
    t_sample = time.perf_counter() - t0
    nll, excess = target_nll(model, rows, layout)
    perm, counts = split_order(len(rows), task.splits, task.split_seed, task.index)
    rows, nll, excess = rows[perm], nll[perm], excess[perm]
    keep = rows[:, 1:] != layout.pad_token
    table = ak.zip({"tokens": ak.from_numpy(rows), "nll": nll.sum(1), "n_targets": keep.sum(1).astype(np.int32),
                    "excess": excess.sum(1)}, depth_limit=1)
    path = part_path(Path(out), task.index)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    ak.to_parquet(table, tmp)
    tmp.replace(path)
    stats = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
             "sample_seconds": t_sample, "device": str(next(model.parameters()).device),
             "positions": _position_stats(nll, keep)}
    return write_marker(Path(out), task, len(rows), counts, stats)


def _chunk_arrays(out: Path, marker: dict) -> dict[str, dict[str, np.ndarray]]:
    """A finished chunk's columns per split (sha256-checked read)."""
    import awkward as ak

    parts = chunk_splits(read_chunk(out, marker), marker)
    return {s: {"tokens": ak.to_numpy(a["tokens"]).astype(np.uint16), "nll": ak.to_numpy(a["nll"]),
                "n_targets": ak.to_numpy(a["n_targets"]).astype(np.int64), "excess": ak.to_numpy(a["excess"])}
            for s, a in parts.items()}


# ------------------------------------------------------------------------------ the entropy
def _mean_err(total: float, total_sq: float, n: int) -> tuple[float | None, float | None]:
    """Mean and its standard error from a sum, a sum of squares and a count."""
    if n < 1:
        return None, None
    m = total / n
    if n < 2:
        return m, None
    var = max(0.0, (total_sq - n * m * m) / (n - 1))
    return m, math.sqrt(var / n)


def entropy_block(row_nll: np.ndarray, row_targets: np.ndarray, row_excess: np.ndarray,
                  row_split: np.ndarray, positions: dict[str, Any], n_unstopped: int) -> dict[str, Any]:
    """The `data_entropy` record (module doc) from per-row sums over all sampled rows
    (row_split: the split name of each row) and the summed per-position statistics."""
    from scaling_sweeper.train.position_loss import ratio_error

    nll, cnt = np.asarray(row_nll, float), np.asarray(row_targets, float)
    H = float(nll.sum() / cnt.sum())
    count = np.asarray(positions["count"], np.int64)
    last = int(np.flatnonzero(count)[-1]) + 1 if count.any() else 0
    pos = [_mean_err(positions["sum"][t], positions["sumsq"][t], int(count[t])) for t in range(last)]
    stop = _mean_err(positions["stop_sum"], positions["stop_sumsq"], int(positions["stop_count"]))
    row_m, row_e = _mean_err(float(nll.sum()), float((nll * nll).sum()), len(nll))
    splits = {}
    for s in SPLITS:
        m = row_split == s
        if m.any():
            splits[s] = {"nats_per_token": float(nll[m].sum() / cnt[m].sum()), "err": ratio_error(nll[m], cnt[m]),
                         "n_rows": int(m.sum())}
    return {
        "source": "teacher",
        "nats_per_token": H,
        "err": ratio_error(nll, cnt),
        "n_rows": len(nll),
        "n_tokens": int(cnt.sum()),
        "mean_targets_per_row": float(cnt.mean()),
        "row_entropy": row_m,  # nats per row (sum over its targets)
        "row_entropy_err": row_e,
        "teacher_loss_excess": float(np.sum(row_excess) / cnt.sum()),
        "unstopped_frac": n_unstopped / len(nll),
        "per_position": {
            "constituent": [m for m, _ in pos], "constituent_err": [e for _, e in pos],
            "constituent_count": count[:last].tolist(),
            "stop": stop[0], "stop_err": stop[1], "stop_count": int(positions["stop_count"]),
        },
        "splits": splits,
        "definition": ("nats per non-pad target token: sum over rows of sum_t -log q(x_t|x_<t) / number of "
                       "non-pad targets (stop token included), q = the teacher's float64 softmax without "
                       "start and pad; err = delta-method standard error over rows"),
    }


def _sum_positions(markers: list[dict]) -> dict[str, Any]:
    T = max(len(m["stats"]["positions"]["count"]) for m in markers)
    out: dict[str, Any] = {"sum": np.zeros(T), "sumsq": np.zeros(T), "count": np.zeros(T, np.int64),
                           "stop_sum": 0.0, "stop_sumsq": 0.0, "stop_count": 0}
    for m in markers:  # chunk order: the same float sums whatever ran the chunks
        p = m["stats"]["positions"]
        for k in ("sum", "sumsq", "count"):
            out[k][: len(p[k])] += np.asarray(p[k], out[k].dtype)
        for k in ("stop_sum", "stop_sumsq", "stop_count"):
            out[k] += p[k]
    return out


# ------------------------------------------------------------------------------ the folder
def _cache_key(cfg: TeacherDataConfig, teacher: Teacher) -> dict:
    return json.loads(json.dumps({
        "format": TEACHER_FORMAT, "source": "teacher", "teacher_sha256": teacher.sha256,
        "tokenizer_sha256": sha256_file(teacher.tokenizer_file), "n_jets": cfg.n_jets, "seed": cfg.seed,
        "chunk_jets": cfg.chunk_jets, "splits": list(cfg.splits), "rows_per_shard": cfg.rows_per_shard}))


def plan_teacher_chunks(cfg: TeacherDataConfig, teacher: Teacher) -> list[TeacherChunkTask]:
    lay = teacher.layout
    return [TeacherChunkTask(index=i, n_jets=k, seed=chunk_seed(cfg.seed, i), splits=tuple(cfg.splits),
                             split_seed=cfg.seed, checkpoint=str(teacher.checkpoint),
                             checkpoint_sha256=teacher.sha256,
                             layout=(lay.start_token, lay.stop_token, lay.pad_token, lay.seq_len))
            for i, k in enumerate(chunk_quotas(cfg.n_jets, cfg.chunk_jets))]


def make_teacher_dataset(out_dir: str | Path, cfg: TeacherDataConfig, *, progress: bool | None = None,
                         force: bool = False, verbose: bool = False) -> Path:
    """Make (or reuse, or finish) the teacher dataset folder `out_dir` (module doc). Every check
    (teacher, tokenizer, settings) runs before any sampling; a second call with the same
    arguments is a no-op; a call after an interrupted one samples only the missing chunks."""
    cfg = cfg.validate()
    teacher = resolve_teacher(cfg.teacher)
    out = Path(out_dir)
    if out.resolve() in (teacher.run_dir, teacher.tokens_dir, teacher.tokens_dir.parent):
        raise DataError(f"{out}: the output folder is the teacher's own run or data folder")
    key = _cache_key(cfg, teacher)
    try:
        old = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        old = None
    if not force and isinstance(old, dict) and old.get("args") == key and (out / "tokens" / "index.json").is_file():
        if verbose:
            print(f"teacher data: cached in {out} ({old.get('n_jets')} rows)")
        return out
    with make_lock(out):
        manifest = _make_locked(out, cfg, teacher, key, progress=progress, force=force)
    if verbose:
        e = manifest["data_entropy"]
        print(f"teacher data: {manifest['n_jets']} rows from {teacher.size} teacher {teacher.checkpoint} in "
              f"{manifest['n_chunks']} chunks ({manifest['chunks_made']} made now, {manifest['wall_s']:.0f} s); "
              f"entropy H = {e['nats_per_token']:.5f} +- {e['err']:.5f} nats/token; "
              f"tokens in {out / 'tokens'}")
    return out


def _make_locked(out: Path, cfg: TeacherDataConfig, teacher: Teacher, key: dict, *, progress: bool | None,
                 force: bool) -> dict:
    from scaling_sweeper.data.dataset import _drop_stale_chunks, package_versions

    t0 = time.perf_counter()
    (out / "manifest.json").unlink(missing_ok=True)
    tasks = plan_teacher_chunks(cfg, teacher)
    markers = finished_markers(out, tasks, force=force)
    todo = [t for t in tasks if t.index not in markers]
    prog = ChunkProgress(len(tasks), cfg.n_jets, "teacher rows", enabled=progress, done_chunks=len(markers),
                         done_jets=sum(m["n_jets"] for m in markers.values()))

    def done(i: int, marker: dict) -> None:
        markers[todo[i].index] = marker
        prog.done(marker["n_jets"])

    threads = cfg.threads or (1 if cfg.workers > 1 else 0)
    runtime = {"device": _device(cfg.device), "batch_size": cfg.batch_size, "threads": threads}
    where = str(out.resolve())
    run_tasks(make_teacher_chunk, [(t, where, runtime) for t in todo], workers=cfg.workers, on_done=done)
    _drop_stale_chunks(out, len(tasks))
    ordered = [markers[t.index] for t in tasks]
    block, counts = _write_outputs(out, teacher, ordered, cfg)
    stats = [m["stats"] for m in ordered]
    manifest = {
        "format_version": TEACHER_FORMAT,
        "source": "teacher",
        "args": key,
        "teacher": teacher.info(),
        "versions": package_versions(),
        "n_jets": cfg.n_jets,
        "splits": counts,
        "n_chunks": len(tasks),
        "chunks_made": len(todo),
        "chunk_sha256": [m["sha256"] for m in ordered],
        "generation": {"worker_s": sum(s["seconds"] for s in stats), "worker_cpu_s": sum(s["cpu_seconds"] for s in stats),
                       "sample_s": sum(s["sample_seconds"] for s in stats),
                       "devices": sorted({s["device"] for s in stats})},
        "data_entropy": {k: block[k] for k in ("nats_per_token", "err", "n_rows", "teacher_loss_excess")},
        "wall_s": time.perf_counter() - t0,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


def _device(name: str) -> str:
    from scaling_sweeper.train.precision import resolve_device

    return str(resolve_device(name))


def _write_outputs(out: Path, teacher: Teacher, markers: list[dict],
                   cfg: TeacherDataConfig) -> tuple[dict, dict[str, dict[str, int]]]:
    """Token shards + index (with the entropy), the per-row val losses, the tokenizer copy and the
    decoded split files, from the finished chunks in chunk order."""
    from scaling_sweeper.data.tokenizer import load_tokenizer_file

    tokens = out / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    tok_path = tokens / "tokenizer.json"
    atomic_write(tok_path, lambda f: f.write(teacher.tokenizer_file.read_bytes()))
    if sha256_file(tok_path) != sha256_file(teacher.tokenizer_file):
        raise DataError(f"{tok_path}: copy of {teacher.tokenizer_file} does not match it")
    tok = load_tokenizer_file(tok_path)
    lay = teacher.layout
    writer = ShardWriter(tokens, seq_len=lay.seq_len, vocab_size=teacher.vocab_size, pad_token=lay.pad_token,
                         rows_per_shard=cfg.rows_per_shard)
    cols: dict[str, list] = {k: [] for k in ("nll", "n_targets", "excess", "split")}
    val_rows: list[np.ndarray] = []
    n_unstopped = 0
    kept = {s: 0 for s in SPLITS}
    try:
        for s in SPLITS:  # split by split: each stream's rows in chunk order
            for m in markers:
                a = _chunk_arrays(out, m)[s]
                writer.append(s, a["tokens"])
                for k in ("nll", "n_targets", "excess"):
                    cols[k].append(a[k])
                cols["split"].append(np.full(len(a["nll"]), s))
                n_unstopped += int((~(a["tokens"] == lay.stop_token).any(1)).sum())
                if s == "val":
                    val_rows.append(np.stack([a["nll"], a["n_targets"].astype(float)], axis=1))
    except BaseException:
        writer.abort()
        raise
    block = entropy_block(np.concatenate(cols["nll"]), np.concatenate(cols["n_targets"]),
                          np.concatenate(cols["excess"]), np.concatenate(cols["split"]),
                          _sum_positions(markers), n_unstopped)
    val = np.concatenate(val_rows) if val_rows else np.zeros((0, 2))
    atomic_write(tokens / VAL_NLL_FILE, lambda f: np.save(f, val, allow_pickle=False))
    block["val_rows"] = {"file": VAL_NLL_FILE, "sha256": sha256_file(tokens / VAL_NLL_FILE), "n_rows": len(val)}
    block["teacher"] = teacher.info()
    block["seed"] = cfg.seed
    writer.close(tok_path, extra={INDEX_KEY: block})
    for s in SPLITS:
        kept[s] = _write_split_jets(out, s, markers, tok, lay)
    counts = {s: {"rows": int(sum(m["splits"][s] for m in markers)), "jets": kept[s]} for s in SPLITS}
    return block, counts


def decodable(rows: np.ndarray, tok) -> np.ndarray:
    """Rows whose jets the evaluation would score: they decode cleanly (`valid_rows`: a stop
    token, only content between start and stop) and hold at least one constituent."""
    from scaling_sweeper.evaluate.generate import valid_rows

    return valid_rows(rows, tok) & (rows[:, 1] != tok.stop_token)


def _write_split_jets(out: Path, split: str, markers: list[dict], tok, lay: RowLayout) -> int:
    """<out>/<split>.parquet: the decoded jets of the split's decodable rows, one row group per
    chunk, constituents sorted by pt (data/jets.py form). Returns the number of jets."""
    import awkward as ak

    from scaling_sweeper.data.jets import make_jets

    def jets_of(rows: np.ndarray):
        j = tok.decode(rows[decodable(rows, tok)])
        counts = ak.to_numpy(ak.num(j.part_pt, axis=1))
        flat = {f: ak.to_numpy(ak.flatten(j[f])) for f in ("part_pt", "part_eta_rel", "part_phi_rel")}
        return make_jets(counts, flat["part_pt"], flat["part_eta_rel"], flat["part_phi_rel"],
                         *(ak.to_numpy(j[f]) for f in ("jet_pt", "jet_eta", "jet_phi", "jet_mass")))

    n = 0

    def parts():
        nonlocal n
        for m in markers:
            jets = jets_of(_chunk_arrays(out, m)[split]["tokens"])
            n += len(jets)
            if len(jets):
                yield jets

    path = out / f"{split}.parquet"
    tmp = path.with_name(f".{path.name}.tmp")
    gen = parts()
    first = next(gen, None)
    if first is None:  # no decodable jet in this split: an empty file with the schema
        ak.to_parquet(jets_of(np.zeros((0, lay.seq_len), np.uint16)), tmp)
    else:
        ak.to_parquet_row_groups(_chain(first, gen), tmp)
    tmp.replace(path)
    return n


def _chain(first, rest):
    yield first
    yield from rest


def entropy_summary(block: dict) -> str:
    """One line for `sweeper data info` and logs."""
    return (f"known entropy H = {block['nats_per_token']:.5f} +- {block['err']:.5f} nats/token over "
            f"{block['n_rows']} teacher rows (teacher's own loss is {block['teacher_loss_excess']:.2e} higher)")
