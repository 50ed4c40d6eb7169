"""Data throughput benchmark (prints ratios; not a test).

1. Loader: tokens/s the memory-mapped train shard delivers for random batches (batch x seq_len,
   gathered from the memmap and turned into (x, y) long tensors the way the trainer does it).
2. Training step: tokens/s one Ranger step of a Pico and an S model consumes on the same batches
   (if scaling_sweeper/model.py exists; otherwise the loader alone is measured and said so).
   The ratio loader/step must stay well above 1: the loader is never the bottleneck.
3. Generation: jets/s per core of Pythia 8 + fastjet (one worker process), and with --workers.
4. Scaling (--scaling): `make_dataset` jets/s in one process vs as Ray tasks on a local multi-node
   loopback cluster of 1, 2 and 4 one-CPU nodes (cluster/start_local_cluster.sh; the same chunks,
   so the same jets), and the peak RSS of a one-process build when the number of jets grows 10x
   (synthetic Aspen files streamed in chunks; target: growth < 1.5x).

    .venv/bin/python benchmarks/bench_data.py [--tokens data/jets/tokens] [--gen-jets 300]
    .venv/bin/python benchmarks/bench_data.py --scaling-only --scale-jets 400 --chunk-jets 50 --rss-jets 10000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling_sweeper.data.shards import TokenShard  # noqa: E402


def bench_loader(shard: TokenShard, batch: int, seconds: float, seed: int = 0) -> float:
    """Tokens/s (positions incl. padding) of random batch gathers from the memmap -> (x, y)."""
    import torch

    rng = np.random.default_rng(seed)
    pad = shard.index.pad_token
    n, t0, n_batches = shard.n_seq, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        rows = shard.data[np.sort(rng.integers(0, n, batch))]  # fancy index on the memmap: a copy
        t = torch.from_numpy(rows.astype(np.int64))
        x, y = t[:, :-1].contiguous(), t[:, 1:].clone()  # what the step consumes
        y[y == pad] = -100
        n_batches += x.shape[0] // batch
    return n_batches * batch * shard.seq_len / (time.perf_counter() - t0)


def bench_train_step(shard: TokenShard, size: str, batch: int, steps: int, device: str) -> float | None:
    """Tokens/s consumed by forward+backward+Ranger step of preset `size` (None if no model.py)."""
    try:
        from scaling_sweeper.base.model_config import config_for_rows
        from scaling_sweeper.model import GPT
    except ImportError:
        return None
    import torch
    from pytorch_optimizer import Ranger

    torch.manual_seed(0)
    cfg = config_for_rows(size, shard.index.vocab_size, shard.seq_len)
    model = GPT(cfg).to(device)
    opt = Ranger(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(1)
    pad = shard.index.pad_token

    def step() -> None:
        rows = shard.data[np.sort(rng.integers(0, shard.n_seq, batch))]
        t = torch.from_numpy(rows.astype(np.int64)).to(device)
        x, y = t[:, :-1], t[:, 1:].clone()
        y[y == pad] = -100
        loss = model.training_loss(x, y) if hasattr(model, "training_loss") else model(x, y)[1]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch * shard.seq_len / (time.perf_counter() - t0)


def bench_generation(n_jets: int, workers: int) -> dict:
    from scaling_sweeper.data.pythia import generate_jets

    stats: dict = {}
    # chunks small enough that every worker gets some (the jets do not depend on workers)
    generate_jets(n_jets, seed=123, workers=workers, chunk_jets=max(1, -(-n_jets // (2 * workers))),
                  progress=False, stats=stats)
    return stats


REPO = Path(__file__).resolve().parents[1]


def _cluster(n_nodes: int, tmpd: str) -> tuple[dict, list[str]]:
    """Start a loopback cluster of n_nodes one-CPU nodes; returns its info and the stop command."""
    script = REPO / "cluster" / "start_local_cluster.sh"
    env = {**os.environ, "PYTHON": sys.executable, "RAY": str(Path(sys.executable).parent / "ray")}
    out = subprocess.run(["bash", str(script), "--workers", str(n_nodes - 1), "--cpus", "1", "--temp-dir", tmpd],
                         env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stdout + out.stderr)
    info = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
    return info, ["bash", str(script), "--stop", "--temp-dir", tmpd]


def _timed_make(out: Path, n_jets: int, chunk_jets: int, **kw) -> float:
    """Wall seconds of making (only) the jets of a Pythia dataset."""
    from scaling_sweeper.data.dataset import make_dataset

    t0 = time.perf_counter()
    make_dataset(out, n_jets=n_jets, seed=5, chunk_jets=chunk_jets, tokenize=False, progress=False, **kw)
    return time.perf_counter() - t0


def bench_scaling(n_jets: int, chunk_jets: int, nodes: list[int]) -> None:
    """jets/s of one process vs Ray tasks on loopback clusters of `nodes` one-CPU nodes."""
    import json

    with tempfile.TemporaryDirectory() as tmp:
        base = _timed_make(Path(tmp) / "one", n_jets, chunk_jets, workers=1)
        ref = json.loads((Path(tmp) / "one" / "manifest.json").read_text())["chunk_sha256"]
        print(f"scaling     : one process      {n_jets / base:8.1f} jets/s  ({n_jets} jets, chunks of {chunk_jets}, "
              f"{base:.1f} s)")
        for w in nodes[1:] if nodes and nodes[0] == 1 else nodes:
            out = Path(tmp) / f"pool{w}"
            wall = _timed_make(out, n_jets, chunk_jets, workers=w)
            same = json.loads((out / "manifest.json").read_text())["chunk_sha256"] == ref
            print(f"scaling     : {w} local processes {n_jets / wall:7.1f} jets/s  speed-up {base / wall:5.2f}x "
                  f"(same chunks: {same})")
        for n in nodes:
            tmpd = f"/tmp/rayb-{os.getpid()}-{n}"
            try:
                info, stop = _cluster(n, tmpd)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"scaling     : Ray, {n} node(s): the loopback cluster did not start ({str(e).strip()[-160:]})")
                subprocess.run(["bash", str(REPO / "cluster" / "start_local_cluster.sh"), "--stop", "--temp-dir", tmpd],
                               capture_output=True, timeout=120)
                continue
            try:
                out = Path(tmp) / f"ray{n}"
                from scaling_sweeper.cluster.ray_tasks import RayTasks

                wall = _timed_make(out, n_jets, chunk_jets, executor=RayTasks(info["RAY_ADDRESS"]))
                same = json.loads((out / "manifest.json").read_text())["chunk_sha256"] == ref
            finally:
                subprocess.run(stop, capture_output=True, timeout=120)
            print(f"scaling     : Ray, {n} node(s)   {n_jets / wall:8.1f} jets/s  speed-up {base / wall:5.2f}x vs one "
                  f"process (incl. connecting; same chunks: {same})")


_RSS_CODE = """
import sys
from scaling_sweeper.data.dataset import make_dataset, TokenizeConfig
make_dataset(sys.argv[1], source="aspen", input=sys.argv[2], n_jets=None, workers=1, chunk_jets=int(sys.argv[3]),
             progress=False, tokenizer=TokenizeConfig(fit_jets=int(sys.argv[4])))
"""


def write_synthetic_aspen(path: Path, n_jets: int, seed: int = 0, slots: int = 64) -> Path:
    """An Aspen-layout HDF5 file of n_jets random jets (10-60 constituents), written in blocks."""
    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        cands = f.create_dataset("PFCands", (n_jets, slots, 4), dtype=np.float32, chunks=(1000, slots, 4),
                                 compression="gzip")
        kin = f.create_dataset("jet_kinematics", (n_jets, 4), dtype=np.float32)
        for lo in range(0, n_jets, 10_000):
            k = min(10_000, n_jets - lo)
            n = rng.integers(10, 60, k)
            pt = rng.exponential(20.0, (k, slots)) + 0.5
            eta, phi = rng.uniform(-0.6, 0.6, (k, slots)), rng.uniform(-0.6, 0.6, (k, slots))
            live = np.arange(slots)[None, :] < n[:, None]
            p4 = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), pt * np.cosh(eta)], axis=2)
            cands[lo : lo + k] = np.where(live[:, :, None], p4, 0.0)
            kin[lo : lo + k] = np.stack([rng.uniform(500, 650, k), np.zeros(k), np.zeros(k),
                                         rng.uniform(20, 200, k)], axis=1)
    return path


def peak_rss_mib(out: Path, inp: Path, chunk_jets: int, fit_jets: int) -> float:
    """Peak RSS (MiB) of a fresh process that makes and tokenizes the dataset in one process."""
    p = subprocess.Popen([sys.executable, "-c", _RSS_CODE, str(out), str(inp), str(chunk_jets), str(fit_jets)],
                         cwd=REPO)
    _, status, ru = os.wait4(p.pid, 0)
    if status != 0:
        raise RuntimeError(f"dataset build failed (status {status})")
    return ru.ru_maxrss / 1024  # Linux: KiB


def bench_rss(n_jets: int, chunk_jets: int, fit_jets: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rss = {}
        for n in (n_jets, 10 * n_jets):
            inp = write_synthetic_aspen(Path(tmp) / f"aoj{n}.h5", n)
            rss[n] = peak_rss_mib(Path(tmp) / f"ds{n}", inp, chunk_jets, fit_jets)
            print(f"peak RSS    : {n:>9} jets -> {rss[n]:7.1f} MiB (one process, chunks of {chunk_jets}, "
                  f"fit sample {fit_jets})")
        g = rss[10 * n_jets] / rss[n_jets]
        print(f"peak RSS    : 10x jets -> {g:.2f}x RSS  ({'ok' if g < 1.5 else 'ABOVE'} target < 1.5x)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=Path, default=None,
                    help="tokens folder (default: data/jets/tokens if present, else make 1000 jets in a temp dir)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--sizes", default="Pico,S")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--loader-seconds", type=float, default=2.0)
    ap.add_argument("--gen-jets", type=int, default=300, help="jets per generation measurement (0: skip)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: per-core numbers)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--scaling", action="store_true", help="also measure cluster scaling and peak RSS (section 4)")
    ap.add_argument("--scaling-only", action="store_true", help="only section 4")
    ap.add_argument("--scale-jets", type=int, default=400, help="Pythia jets per scaling measurement")
    ap.add_argument("--chunk-jets", type=int, default=50, help="jets per chunk in section 4")
    ap.add_argument("--nodes", default="1,2,4", help="cluster sizes (one-CPU nodes) for section 4")
    ap.add_argument("--rss-jets", type=int, default=10_000, help="jets of the smaller RSS build (the other: 10x; 0: skip)")
    ap.add_argument("--rss-chunk-jets", type=int, default=5_000)
    ap.add_argument("--rss-fit-jets", type=int, default=5_000, help="tokenizer fit sample in the RSS builds")
    args = ap.parse_args(argv)

    if args.scaling or args.scaling_only:
        if args.rss_jets > 0:
            bench_rss(args.rss_jets, args.rss_chunk_jets, args.rss_fit_jets)
        if args.scale_jets > 0:
            bench_scaling(args.scale_jets, args.chunk_jets, [int(n) for n in args.nodes.split(",") if n])
        if args.scaling_only:
            return 0

    import torch

    torch.set_num_threads(args.threads)
    tmp = None
    tokens = args.tokens
    if tokens is None:
        default = Path("data/jets/tokens")
        if (default / "index.json").is_file():
            tokens = default
        else:
            from scaling_sweeper.data.dataset import make_dataset

            tmp = tempfile.TemporaryDirectory()
            print("making a 1000-jet dataset for the loader benchmark ...", flush=True)
            tokens = make_dataset(Path(tmp.name) / "jets", n_jets=1000, workers=args.workers,
                                  progress=False) / "tokens"
    shard = TokenShard(tokens, "train")
    print(f"tokens: {tokens} ({shard.n_seq} rows x {shard.seq_len}, vocab {shard.index.vocab_size}); "
          f"batch {args.batch}; torch threads {args.threads}; device {args.device}; cpus {os.cpu_count()}")

    loader = bench_loader(shard, args.batch, args.loader_seconds)
    print(f"loader      : {loader:14,.0f} tokens/s (random {args.batch}x{shard.seq_len} gathers from the memmap)")
    for size in [s for s in args.sizes.split(",") if s]:
        step = bench_train_step(shard, size, args.batch, args.steps, args.device)
        if step is None:
            print("train step  : scaling_sweeper/model.py not found -> measured the loader only")
            break
        print(f"train {size:<5} : {step:14,.0f} tokens/s   loader / step = {loader / step:8.1f}x"
              f"  ({'ok' if loader > 10 * step else 'LOADER MAY LIMIT'})")

    if args.gen_jets > 0:
        one = bench_generation(args.gen_jets, 1)
        print(f"generation  : {one['jets_per_s_per_core']:.1f} jets per CPU-second (1 worker, {args.gen_jets} jets, "
              f"{one['n_events']} events; issue reference: ~70)")
        if args.workers > 1:
            many = bench_generation(args.gen_jets, args.workers)
            print(f"generation  : {args.gen_jets / many['wall_s']:.1f} jets/s wall with {args.workers} workers "
                  f"({many['jets_per_s_per_core']:.1f} per worker CPU-second; "
                  f"speed-up {one['wall_s'] / many['wall_s']:.2f}x incl. process start)")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
