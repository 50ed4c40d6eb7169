"""GPU performance of the trainer and of sampling, side by side with a bare compiled loop.

    python benchmarks/bench_gpu.py                          # CUDA: sizes M L XL XXL at 256 and 1024 rows
    python benchmarks/bench_gpu.py --device cpu --sizes Pico --rows 4 --steps 4 --warmup 2 \\
        --sample-jets 8 --seq-len 40 --vocab 35             # CPU smoke run (the test suite runs this)

Per size and batch (rows of --seq-len tokens, synthetic jets of the real shape: vocab 8195,
130 tokens, about half padding):
  bare      a bare loop: the same GPT and Ranger, batches already on the device, bf16 autocast
            (the trainer's resolved precision) and torch.compile of the loss, nothing else
  trainer   `train.run_trial` with precision auto and compile true, timed between progress
            callbacks (log every --warmup steps: one host sync per log, as in real runs)
  ratio     trainer step time / bare step time (target <= 1.05)
  MFU       6 N_incl tokens/s / --peak-tflops (989: H100/H200 dense bf16); targets 30% (XL) and
            35% (XXL) at 1024 rows
  zero2/3   (CUDA, DeepSpeed importable) the project's build_ds_config + make_zero_optimizer on
            one GPU, world size 1, bf16 engine: the cost of ZeRO's partitioning on one GPU
Sampling: jets/s of `evaluate.generate.generate` (static KV cache, compiled decode step on CUDA,
batch from free memory), random weights with the stop token disabled (every jet runs the full
length: the slowest case). Target on one H100/H200: >= 5,000 XL jets/s.

Only torch and the package's light dependencies are needed (no Ray). Step times are medians
of per-interval means after the warm-up (which includes compilation). Writes a JSON
(--out, default benchmarks/results/gpu.json or gpu_cpu.json) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.bench_trainer import synthetic_tokens  # noqa: E402
from scaling_sweeper.base.model_config import config_for_rows  # noqa: E402
from scaling_sweeper.data.shards import TokenShard  # noqa: E402
from scaling_sweeper.model import GPT, config_for, count_params  # noqa: E402
from scaling_sweeper.train.batches import to_device_xy  # noqa: E402
from scaling_sweeper.train.config import TrainConfig  # noqa: E402
from scaling_sweeper.train.lifecycle import make_optimizer  # noqa: E402
from scaling_sweeper.train.precision import autocast, compile_loss, configure_matmul, resolve_precision  # noqa: E402
from scaling_sweeper.train.single import run_trial  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(size: str, rows: int, data: Path, a: argparse.Namespace, device: torch.device,
              precision: str) -> float:
    """Seconds per optimizer step of the bare compiled loop (batches pre-staged on the device)."""
    shard = TokenShard(data, "train", verify="none")
    torch.manual_seed(0)
    model = GPT(config_for_rows(size, shard.index.vocab_size, shard.seq_len)).to(device)
    opt = make_optimizer(model, TrainConfig(size=size, data=str(data), tokens=shard.n_tokens, steps=1))
    loss_fn = compile_loss(model.training_loss, a.compile, device)
    n = a.warmup + a.steps
    idx = [torch.randint(0, shard.n_seq, (rows,)).numpy() for _ in range(n)]
    batches = [to_device_xy(shard.data[i], shard.index.pad_token, device) for i in idx]
    params = list(model.parameters())
    times = []
    for k, (x, y) in enumerate(batches):
        if k == a.warmup:
            _sync(device)
            t0 = time.perf_counter()
        with autocast(device, precision):
            loss = loss_fn(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if k >= a.warmup and (k + 1 - a.warmup) % a.warmup == 0:
            _sync(device)
            t1 = time.perf_counter()
            times.append((t1 - t0) / a.warmup)
            t0 = t1
    return statistics.median(times)


def trainer(size: str, rows: int, data: Path, a: argparse.Namespace, device: torch.device, tmp: Path) -> float:
    """Seconds per optimizer step of run_trial between progress callbacks after the warm-up."""
    shard = TokenShard(data, "train", verify="none")
    n = a.warmup + a.steps
    cfg = TrainConfig(size=size, data=str(data), tokens=shard.n_tokens, steps=n + 1, batch_size=rows,
                      log_every=a.warmup, eval_every=n + 1, ckpt_every=n + 1, eval_batches=1,
                      device=str(device), precision=a.precision, compile=a.compile)  # fmt: skip
    stamps: dict[int, float] = {}

    def on_progress(p) -> None:
        if p.step <= n:
            stamps[p.step] = time.perf_counter()

    run_trial(cfg, tmp / f"trainer_{size}_{rows}", on_progress=on_progress)
    steps = sorted(s for s in stamps if s >= a.warmup)
    times = [(stamps[b] - stamps[s]) / (b - s) for s, b in zip(steps, steps[1:])]
    return statistics.median(times)


def zero_step(size: str, rows: int, stage: int, data: Path, a: argparse.Namespace) -> float:
    """Seconds per step of a DeepSpeed engine (ZeRO `stage`, bf16) on one GPU, world size 1."""
    import deepspeed
    import torch.nn.functional as F

    from scaling_sweeper.train.deepspeed_config import build_ds_config
    from scaling_sweeper.train.zero import make_zero_optimizer

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    deepspeed.init_distributed(dist_backend="nccl")
    shard = TokenShard(data, "train", verify="none")
    torch.manual_seed(0)
    cfg = TrainConfig(size=size, data=str(data), tokens=shard.n_tokens, steps=1, batch_size=rows)
    model = GPT(config_for_rows(size, shard.index.vocab_size, shard.seq_len))
    ds = build_ds_config(f"zero{stage}", batch_size=rows, world_size=1, micro_batch=rows, grad_clip=1.0, bf16=True)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=make_zero_optimizer(model, cfg), config=ds,
                                           dist_init_required=False)  # fmt: skip
    device = engine.device
    times, t0 = [], 0.0
    for k in range(a.warmup + a.steps):
        if k == a.warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        x, y = to_device_xy(shard.data[torch.randint(0, shard.n_seq, (rows,)).numpy()], shard.index.pad_token, device)
        logits, _ = engine(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)
        engine.backward(loss)
        engine.step()
    torch.cuda.synchronize()
    times.append((time.perf_counter() - t0) / a.steps)
    del engine
    torch.cuda.empty_cache()
    return times[0]


def sampling(size: str, a: argparse.Namespace, device: torch.device) -> float:
    """Jets/s of generate() on random weights, every jet running the full length."""
    from scaling_sweeper.evaluate.generate import auto_batch_size, generate

    v, length = a.vocab, a.seq_len - 1
    torch.manual_seed(0)
    model = GPT(config_for(size, v, length)).to(device).eval()
    tok = SimpleNamespace(start_token=v - 3, stop_token=-1, pad_token=v - 1, seq_len=a.seq_len)
    # the batch generate() would pick from free memory; the warm-up (one batch: compilation and
    # CUDA-graph capture for that shape) and the timed run use the same one
    batch = auto_batch_size(model, a.seq_len, a.sample_jets, device, next(model.parameters()).dtype)
    generate(model, batch, tokenizer=tok, seed=0, batch_size=batch)
    _sync(device)
    t = time.perf_counter()
    generate(model, a.sample_jets, tokenizer=tok, seed=1, batch_size=batch)
    _sync(device)
    return a.sample_jets / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default="M,L,XL,XXL")
    ap.add_argument("--rows", default="256,1024", help="batch sizes (rows per step)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (a multiple of --warmup)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first; also the timing interval")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--compile", type=int, default=1, help="1: compile the loss (trainer and bare loop)")
    ap.add_argument("--sample-jets", type=int, default=16384)
    ap.add_argument("--zero", choices=("auto", "on", "off"), default="auto", help="auto: CUDA + DeepSpeed")
    ap.add_argument("--vocab", type=int, default=8195)
    ap.add_argument("--seq-len", type=int, default=130)
    ap.add_argument("--train-rows", type=int, default=4096, help="rows of the synthetic train split")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    a.compile = bool(a.compile)
    a.steps = max(a.warmup, a.steps // a.warmup * a.warmup)
    device = torch.device(a.device)
    precision = resolve_precision(a.precision, device)
    configure_matmul(device)
    zero = a.zero == "on" or (a.zero == "auto" and device.type == "cuda" and _importable("deepspeed"))
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    results = {"device": card, "torch": torch.__version__, "precision": precision, "compile": a.compile,
               "peak_tflops": a.peak_tflops, "train": [], "sampling": []}  # fmt: skip
    print(f"{card}, torch {torch.__version__}, precision {precision}, compile {a.compile}, "
          f"{a.steps} timed steps after {a.warmup}")
    print(f"{'size':<5} {'rows':>5} {'bare ms':>8} {'trainer ms':>10} {'ratio':>6} {'MFU':>6} "
          f"{'zero2 ms':>9} {'zero3 ms':>9} {'z3/single':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_tokens(Path(tmp) / "tokens", n_rows=a.train_rows, seq_len=a.seq_len, vocab=a.vocab)
        for size in a.sizes.split(","):
            n_incl = count_params(config_for_rows(size, a.vocab, a.seq_len))[1]
            for rows in (int(r) for r in a.rows.split(",")):
                bare = bare_loop(size, rows, data, a, device, precision)
                tr = trainer(size, rows, data, a, device, Path(tmp))
                tps = rows * a.seq_len / tr
                mfu = 6 * n_incl * tps / (a.peak_tflops * 1e12) if device.type == "cuda" else None
                rec = {"size": size, "rows": rows, "N_incl": n_incl, "bare_s": bare, "trainer_s": tr,
                       "ratio": tr / bare, "tokens_per_s": tps, "mfu": mfu}  # fmt: skip
                if zero:
                    rec["zero2_s"] = zero_step(size, rows, 2, data, a)
                    rec["zero3_s"] = zero_step(size, rows, 3, data, a)
                    rec["zero3_over_trainer"] = rec["zero3_s"] / tr
                results["train"].append(rec)
                z2, z3 = rec.get("zero2_s"), rec.get("zero3_s")
                print(f"{size:<5} {rows:>5} {1e3 * bare:>8.2f} {1e3 * tr:>10.2f} {tr / bare:>6.3f} "
                      f"{'-' if mfu is None else f'{100 * mfu:.1f}%':>6} "
                      f"{'-' if z2 is None else f'{1e3 * z2:.1f}':>9} {'-' if z3 is None else f'{1e3 * z3:.1f}':>9} "
                      f"{'-' if z3 is None else f'{z3 / tr:.2f}':>9}", flush=True)  # fmt: skip
            jps = sampling(size, a, device)
            results["sampling"].append({"size": size, "jets": a.sample_jets, "jets_per_s": jps})
            print(f"{size:<5} sampling: {jps:,.1f} jets/s ({a.sample_jets} jets of {a.seq_len - 1} tokens)", flush=True)
    out = Path(a.out) if a.out else REPO / "benchmarks" / "results" / ("gpu.json" if device.type == "cuda"
                                                                        else "gpu_cpu.json")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out}")
    return 0


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    sys.exit(main())
