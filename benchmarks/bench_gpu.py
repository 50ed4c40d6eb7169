"""GPU performance of the trainer and of sampling, side by side with a bare compiled loop.

    python benchmarks/bench_gpu.py                          # CUDA: sizes M L XL XXL at 256 and 1024 rows
    python benchmarks/bench_gpu.py --device cpu --sizes Pico --rows 4 --steps 4 --warmup 2 \\
        --sample-jets 8 --seq-len 40 --vocab 35             # CPU smoke run (the test suite runs this)

Per size and batch (rows of --seq-len tokens, synthetic jets of the real shape: vocab 8195,
130 tokens, about half padding):
  bare      a bare loop: the same GPT and Ranger, batches already on the device, bf16 autocast
            (the trainer's resolved precision) and torch.compile of the loss, nothing else
  trainer   `train.single.run_trial` with precision auto and compile true, timed between progress
            callbacks (log every --warmup steps: one host sync per log, as in real runs)
  ratio     trainer step time / bare step time (target <= 1.05)
  MFU       6 N_incl tokens/s / --peak-tflops (989: H100/H200 dense bf16), tokens = the
            seq_len - 1 positions per row the model processes (as the trainer's C_exact);
            targets 30% (XL) and 35% (XXL) at 1024 rows
  zero2/3   (CUDA, DeepSpeed importable) the project's build_ds_config + make_zero_optimizer on
            one GPU, world size 1, bf16 engine: the cost of ZeRO's partitioning on one GPU
Sampling: jets/s of `evaluate.generate.generate` per --sample-precisions (default auto,fp32:
bf16 and fp32 on CUDA), static KV cache with a length-bucketed read, compiled decode step on CUDA,
random weights with the stop token disabled (every jet runs the full length: the slowest case).
The batch is sized from free memory after the training models are freed (empty_cache), and only
whole batches are timed (no padded rows in jets/s); the row also has the peak memory and the
CUDA-graph skip count. Target on one H100/H200: >= 5,000 XL jets/s.

Only torch and the package's light dependencies are needed (no Ray). Step times are medians
of per-interval means after the warm-up (which includes compilation). The JSON (--out, default
benchmarks/results/gpu.json or gpu_cpu.json) is rewritten (atomically) after every measured row,
so a crash or a timeout keeps the rows measured so far; a row that fails is recorded with its
error and the next one runs (exit status 1 if any failed).
"""

from __future__ import annotations

import argparse
import gc
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
from scaling_sweeper.model import GPT, count_params  # noqa: E402
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


def free_memory(device: torch.device) -> None:
    """Release what earlier measurements left (cached allocator blocks), so free memory is real."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def sampling(size: str, a: argparse.Namespace, device: torch.device, precision: str) -> dict:
    """Jets/s of generate() on random weights, every jet running the full length, timed over
    whole batches only (the batch generate() would pick from free memory after freeing the
    training measurements; a warm-up batch first: compilation and CUDA-graph capture)."""
    from torch._dynamo.utils import counters

    from scaling_sweeper.evaluate.generate import auto_batch_size, generate, resolve_sampling_precision

    v = a.vocab
    free_memory(device)
    torch.manual_seed(0)
    model = GPT(config_for_rows(size, v, a.seq_len)).to(device).eval()
    tok = SimpleNamespace(start_token=v - 3, stop_token=-1, pad_token=v - 1, seq_len=a.seq_len)
    precision = resolve_sampling_precision(precision, device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    free_gib = torch.cuda.mem_get_info(device)[0] / 2**30 if device.type == "cuda" else None
    n_batches = getattr(a, "sample_batches", 0)  # > 0: that many full auto-sized batches
    batch = auto_batch_size(model, a.seq_len, 1 << 30 if n_batches else a.sample_jets, device, dtype)
    n_jets = batch * (n_batches or max(1, round(a.sample_jets / batch)))  # whole batches: only real jets
    skips0 = counters["inductor"]["cudagraph_skips"]
    t = time.perf_counter()
    generate(model, batch, tokenizer=tok, seed=0, batch_size=batch, precision=precision)
    _sync(device)
    warm_s = time.perf_counter() - t
    t = time.perf_counter()
    generate(model, n_jets, tokenizer=tok, seed=1, batch_size=batch, precision=precision)
    _sync(device)
    dt = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    del model
    free_memory(device)
    return {"size": size, "precision": precision, "batch": batch, "jets": n_jets, "jets_per_s": n_jets / dt,
            "seconds": dt, "warmup_batch_s": warm_s, "free_gib_before": free_gib, "peak_gib": peak,
            "cudagraph_skips": counters["inductor"]["cudagraph_skips"] - skips0}  # fmt: skip


def cache_equality(size: str, a: argparse.Namespace, device: torch.device) -> list[dict]:
    """Tokens of the compiled static cache (bucketed read; CUDA graphs on CUDA) against the
    eager growing cache, and bucketed against the full-length static read, same seed, fp32
    (TF32 on CUDA); weights scaled so rows stop at varied lengths. Rows that differ come from
    round-off flipping a draw (exactly 0 in float64 on the CPU: tests/test_eval_generate.py)."""
    from scaling_sweeper.evaluate.generate import generate

    v = a.vocab
    stop = SimpleNamespace(start_token=v - 3, stop_token=v - 2, pad_token=v - 1, seq_len=a.seq_len)
    torch.manual_seed(0)
    model = GPT(config_for_rows(size, v, a.seq_len))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)  # peaked distributions
    model = model.to(device)
    out = []
    for temp in (0.0, 1.0):
        kw = dict(tokenizer=stop, temperature=temp, seed=5, batch_size=min(512, a.equality_jets), precision="fp32")
        bucketed = generate(model, a.equality_jets, compile=True, **kw)
        full = generate(model, a.equality_jets, compile=True, decode_bucket=None, **kw)
        growing = generate(model, a.equality_jets, compile=False, **kw)
        out.append({"size": size, "temperature": temp, "rows": len(growing),
                    "rows_differ_static_vs_growing": int((bucketed != growing).any(1).sum()),
                    "rows_differ_bucketed_vs_full": int((bucketed != full).any(1).sum()),
                    "rows_with_stop": int((growing == v - 2).any(1).sum())})  # fmt: skip
    del model
    free_memory(device)
    return out


# targets on one H100/H200 (docs/gpu.md): trainer/bare step time, MFU at (size, rows), jets/s at (size, precision)
RATIO_TARGET = 1.05
MFU_TARGETS = {("XL", 1024): 0.30, ("XXL", 1024): 0.35}
JETS_TARGETS = {("XL", "bf16"): 5000.0}


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def summarize(paths: list[str]) -> list[str]:
    """Lines comparing every row of the given result files with the targets (a missing file or
    a failed row is said, not skipped)."""
    lines = []
    for p in map(Path, paths):
        if not p.is_file():
            lines.append(f"{p.name}: missing (its step failed, timed out or was skipped)")
            continue
        r = json.loads(p.read_text())
        lines.append(f"{p.name}: {r['device']}, torch {r['torch']}, training precision {r['precision']}, compile "
                     f"{r['compile']}{'' if r.get('complete') else ', INCOMPLETE (stopped early)'}")  # fmt: skip
        for t in r.get("train", []):
            if "error" in t:
                lines.append(f"  {t['size']} {t['rows']} rows: FAILED {t['error'][:200]}")
                continue
            mfu, want = t.get("mfu"), MFU_TARGETS.get((t["size"], t["rows"]))
            mfu_s = "-" if mfu is None else f"{100 * mfu:.1f}%"
            if mfu is not None and want is not None:
                mfu_s += f" (target >= {100 * want:.0f}%: {_verdict(mfu >= want)})"
            lines.append(f"  {t['size']} {t['rows']} rows: bare {1e3 * t['bare_s']:.1f} ms, trainer "
                         f"{1e3 * t['trainer_s']:.1f} ms, ratio {t['ratio']:.3f} (target <= {RATIO_TARGET}: "
                         f"{_verdict(t['ratio'] <= RATIO_TARGET)}), MFU {mfu_s}")  # fmt: skip
        for s in r.get("sampling", []):
            if "error" in s:
                lines.append(f"  {s['size']} sampling {s['precision']}: FAILED {s['error'][:200]}")
                continue
            want = JETS_TARGETS.get((s["size"], s["precision"]))
            tgt = "" if want is None else f" (target >= {want:,.0f}: {_verdict(s['jets_per_s'] >= want)})"
            peak = "" if s.get("peak_gib") is None else f", peak {s['peak_gib']:.1f} GiB"
            lines.append(f"  {s['size']} sampling {s['precision']}: {s['jets_per_s']:,.0f} jets/s{tgt}, batch "
                         f"{s['batch']}, {s['jets']} jets{peak}, cudagraph skips {s['cudagraph_skips']}")  # fmt: skip
        for e in r.get("cache_equality", []):
            if "error" in e:
                lines.append(f"  {e['size']} cache equality: FAILED {e['error'][:200]}")
                continue
            lines.append(f"  {e['size']} cache tokens, temperature {e['temperature']}: "
                         f"{e['rows_differ_static_vs_growing']} of {e['rows']} rows differ static vs growing, "
                         f"{e['rows_differ_bucketed_vs_full']} bucketed vs full-length ({e['rows_with_stop']} rows "
                         "stop)")  # fmt: skip
    return lines


def write_results(path: Path, results: dict) -> None:
    """Rewrite the JSON atomically (a kill mid-write leaves the previous version)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default="M,L,XL,XXL")
    ap.add_argument("--rows", default="256,1024", help="batch sizes (rows per step)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (a multiple of --warmup)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first; also the timing interval")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--compile", type=int, default=1, help="1: compile the loss (trainer and bare loop)")
    ap.add_argument("--sample-jets", type=int, default=16384, help="about this many (whole batches)")
    ap.add_argument("--sample-precisions", default="auto,fp32", help="auto = bf16 on CUDA, fp32 on CPU; '' skips")
    ap.add_argument("--sample-batches", type=int, default=0,
                    help="> 0: time this many full auto-sized batches instead of --sample-jets")
    ap.add_argument("--equality-jets", type=int, default=0,
                    help="> 0: also compare static / growing / full-length cache tokens on this many jets")
    ap.add_argument("--zero", choices=("auto", "on", "off"), default="auto", help="auto: CUDA + DeepSpeed")
    ap.add_argument("--vocab", type=int, default=8195)
    ap.add_argument("--seq-len", type=int, default=130)
    ap.add_argument("--train-rows", type=int, default=4096, help="rows of the synthetic train split")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU")
    ap.add_argument("--out", default=None)
    ap.add_argument("--summarize", nargs="+", metavar="JSON", help="only print these result files vs the targets")
    a = ap.parse_args(argv)
    if a.summarize:
        print("\n".join(summarize(a.summarize)))
        return 0
    a.compile = bool(a.compile)
    a.steps = max(a.warmup, a.steps // a.warmup * a.warmup)
    device = torch.device(a.device)
    precision = resolve_precision(a.precision, device)
    configure_matmul(device)
    zero = a.zero == "on" or (a.zero == "auto" and device.type == "cuda" and _importable("deepspeed"))
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out = Path(a.out) if a.out else REPO / "benchmarks" / "results" / ("gpu.json" if device.type == "cuda"
                                                                        else "gpu_cpu.json")  # fmt: skip
    results = {"device": card, "torch": torch.__version__, "precision": precision, "compile": a.compile,
               "peak_tflops": a.peak_tflops, "train": [], "sampling": [], "cache_equality": [],
               "complete": False}  # fmt: skip
    write_results(out, results)
    failed = 0

    def record(kind: str, rec: dict) -> None:
        results[kind].append(rec)
        write_results(out, results)

    print(f"{card}, torch {torch.__version__}, precision {precision}, compile {a.compile}, "
          f"{a.steps} timed steps after {a.warmup}; rows written to {out} as measured")
    print(f"{'size':<5} {'rows':>5} {'bare ms':>8} {'trainer ms':>10} {'ratio':>6} {'MFU':>6} "
          f"{'zero2 ms':>9} {'zero3 ms':>9} {'z3/single':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_tokens(Path(tmp) / "tokens", n_rows=a.train_rows, seq_len=a.seq_len, vocab=a.vocab)
        for size in a.sizes.split(","):
            n_incl = count_params(config_for_rows(size, a.vocab, a.seq_len))[1]
            for rows in (int(r) for r in a.rows.split(",") if r):
                rec = {"size": size, "rows": rows, "N_incl": n_incl}
                try:
                    bare = bare_loop(size, rows, data, a, device, precision)
                    free_memory(device)
                    tr = trainer(size, rows, data, a, device, Path(tmp))
                    free_memory(device)
                    tps = rows * (a.seq_len - 1) / tr  # positions the model processes (as C_exact)
                    mfu = 6 * n_incl * tps / (a.peak_tflops * 1e12) if device.type == "cuda" else None
                    rec.update(bare_s=bare, trainer_s=tr, ratio=tr / bare, tokens_per_s=tps, mfu=mfu)
                    if zero:
                        rec["zero2_s"] = zero_step(size, rows, 2, data, a)
                        rec["zero3_s"] = zero_step(size, rows, 3, data, a)
                        rec["zero3_over_trainer"] = rec["zero3_s"] / tr
                except Exception as e:  # noqa: BLE001 - keep measuring the other rows
                    failed += 1
                    rec["error"] = f"{type(e).__name__}: {e}"[:2000]
                    free_memory(device)
                record("train", rec)
                if "error" in rec:
                    print(f"{size:<5} {rows:>5} FAILED {rec['error'][:300]}", flush=True)
                    continue
                z2, z3, mfu = rec.get("zero2_s"), rec.get("zero3_s"), rec["mfu"]
                print(f"{size:<5} {rows:>5} {1e3 * bare:>8.2f} {1e3 * tr:>10.2f} {tr / bare:>6.3f} "
                      f"{'-' if mfu is None else f'{100 * mfu:.1f}%':>6} "
                      f"{'-' if z2 is None else f'{1e3 * z2:.1f}':>9} {'-' if z3 is None else f'{1e3 * z3:.1f}':>9} "
                      f"{'-' if z3 is None else f'{z3 / tr:.2f}':>9}", flush=True)  # fmt: skip
            for sp in (p for p in a.sample_precisions.split(",") if p):
                try:
                    rec = sampling(size, a, device, sp)
                except Exception as e:  # noqa: BLE001
                    failed += 1
                    rec = {"size": size, "precision": sp, "error": f"{type(e).__name__}: {e}"[:2000]}
                    free_memory(device)
                record("sampling", rec)
                if "error" in rec:
                    print(f"{size:<5} sampling {sp} FAILED {rec['error'][:300]}", flush=True)
                    continue
                peak = "" if rec["peak_gib"] is None else f", peak {rec['peak_gib']:.1f} GiB"
                print(f"{size:<5} sampling {rec['precision']}: {rec['jets_per_s']:,.1f} jets/s ({rec['jets']} jets "
                      f"of {a.seq_len - 1} tokens, batch {rec['batch']}{peak}, "
                      f"cudagraph skips {rec['cudagraph_skips']})", flush=True)  # fmt: skip
            if a.equality_jets > 0:
                try:
                    for rec in cache_equality(size, a, device):
                        record("cache_equality", rec)
                        print(f"{size:<5} cache tokens T={rec['temperature']}: {rec['rows_differ_static_vs_growing']} "
                              f"of {rec['rows']} rows differ static vs growing, "
                              f"{rec['rows_differ_bucketed_vs_full']} bucketed vs full", flush=True)  # fmt: skip
                except Exception as e:  # noqa: BLE001
                    failed += 1
                    record("cache_equality", {"size": size, "error": f"{type(e).__name__}: {e}"[:2000]})
                    print(f"{size:<5} cache equality FAILED {e}", flush=True)
    results["complete"] = True
    write_results(out, results)
    print(f"written {out}" + (f" ({failed} rows failed)" if failed else ""))
    return 1 if failed else 0


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    sys.exit(main())
