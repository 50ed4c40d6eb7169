"""DeepSpeed strategies under Ray Train vs a single process, same model and same global batch.

    CPU (default when no GPU):   .venv/bin/python benchmarks/bench_zero.py
        ZeRO-3 on 2 gloo workers (1 thread each) vs one process with 1 thread and with 2 threads
        (the faster of the two is the base), same global batch of rows; prints step times and the
        ratio zero3 / single. On a shared machine, run it twice: load from other processes hits
        multi-threaded torch hardest.
    GPU:  python benchmarks/bench_zero.py --sizes M L XL --strategies ddp zero2 zero3 --steps 20
        tokens/s and model FLOPs utilisation (MFU) per size and strategy, bf16, plus the peak
        memory allocated on rank 0 next to `scaling_sweeper.train.memory`'s estimate; written to
        benchmarks/results/zero_gpu.json (zero_cpu.json on CPU).

MFU = 6 * N_incl * tokens/s / (world * peak), the study's C per token (MFU_exact uses
flops.train_flops_exact: attention included). Peak: dense bf16 of the detected GPU (H100/H200
989 TFLOP/s, A100 312) or --peak-tflops. Data: random token rows without padding (shape only
matters for speed). Step time: median over --steps timed steps after --warmup steps.
With one GPU, every strategy runs on world size 1 (ZeRO partitions over one rank: its overhead,
not its memory savings, is what is measured); --workers N needs N GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def _batches(n: int, batch: int, seq_len: int, vocab: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab - 3, (batch, seq_len), generator=g) for _ in range(n)]


def single_process(size: str, a: argparse.Namespace, device: str) -> dict:
    """run_trial's step (model(x, y) mean loss, backward, clip, Ranger) in this process."""
    import torch

    from scaling_sweeper.base.model_config import config_for_rows
    from scaling_sweeper.model import GPT
    from scaling_sweeper.train.zero import make_zero_optimizer

    torch.manual_seed(0)
    model = GPT(config_for_rows(size, a.vocab, a.seq_len)).to(device)
    opt = make_zero_optimizer(model, SimpleNamespace(peak_lr=1e-3, weight_decay=0.0))
    rows = _batches(a.warmup + a.steps, a.batch, a.seq_len, a.vocab)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else _null()
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i, r in enumerate(rows):
        r = r.to(device)
        t = time.perf_counter()
        with amp:
            _, loss = model(r[:, :-1], r[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {"step_s": statistics.median(times), "peak_mem_gib": peak, "world": 1}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _bench_loop(config: dict) -> dict:
    """Ray Train worker: DeepSpeed engine of one strategy, timed steps, report the median."""
    import deepspeed
    import ray.train
    import ray.train.torch
    import torch
    import torch.nn.functional as F

    from scaling_sweeper.base.model_config import config_for_rows
    from scaling_sweeper.model import GPT
    from scaling_sweeper.train.zero import make_zero_optimizer, skip_shm_op_build, split_batch

    torch.set_num_threads(config["threads"])
    if not config["gpu"]:
        skip_shm_op_build()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    gpu = config["gpu"]
    device = ray.train.torch.get_device() if gpu else torch.device("cpu")
    torch.manual_seed(0)
    model = GPT(config_for_rows(config["size"], config["vocab"], config["seq_len"]))
    opt = make_zero_optimizer(model, SimpleNamespace(peak_lr=1e-3, weight_decay=0.0))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=config["ds"], dist_init_required=False)
    mb, gas = config["ds"]["train_micro_batch_size_per_gpu"], config["ds"]["gradient_accumulation_steps"]
    rows = _batches(config["warmup"] + config["steps"], config["batch"], config["seq_len"], config["vocab"])
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    times = []
    n_tok = mb * (config["seq_len"] - 1) * world * gas
    for i, r in enumerate(rows):
        t = time.perf_counter()
        for sl in split_batch(r.shape[0], rank, world, mb, gas):
            x, y = r[sl, :-1].to(device), r[sl, 1:].to(device)
            logits, _ = engine(x)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum")
            engine.backward(loss * world * gas / n_tok)
            engine.step()
        if gpu:
            torch.cuda.synchronize()
        if i >= config["warmup"]:
            times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**30 if gpu else None
    return {"step_s": statistics.median(times), "peak_mem_gib": peak, "world": world}


def distributed(size: str, strategy: str, a: argparse.Namespace, gpu: bool) -> dict:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from scaling_sweeper.train.deepspeed_config import build_ds_config

    ds = build_ds_config(strategy, batch_size=a.batch, world_size=a.workers, micro_batch=a.micro_batch,
                         grad_clip=1.0, bf16=gpu)  # fmt: skip
    res = {"CPU": 1, **({"GPU": 1} if gpu else {})}
    trainer = TorchTrainer(
        _bench_loop,
        train_loop_config={"size": size, "ds": ds, "gpu": gpu, "threads": 1 if not gpu else 4, "vocab": a.vocab,
                           "seq_len": a.seq_len, "batch": a.batch, "steps": a.steps, "warmup": a.warmup},  # fmt: skip
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=a.workers, use_gpu=gpu, resources_per_worker=res),
        run_config=ray.train.RunConfig(name=f"bench-{size}-{strategy}-{int(time.time())}",
                                       storage_path=str(Path(a.scratch).absolute())),  # fmt: skip
    )
    result = trainer.fit()
    return dict(result.return_value)  # rank 0's return value


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--sizes", nargs="+", default=None, help="default: M L XL on GPU, XS on CPU")
    p.add_argument("--strategies", nargs="+", default=None, help="default: ddp zero2 zero3 on GPU, zero3 on CPU")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=None, help="global batch in rows (default 64 GPU, 16 CPU)")
    p.add_argument("--micro-batch", type=int, default=None, help="rows per worker per micro-step")
    p.add_argument("--workers", type=int, default=None, help="default: GPU count, or 2 on CPU")
    p.add_argument("--seq-len", type=int, default=130)
    p.add_argument("--vocab", type=int, default=4099)
    p.add_argument("--peak-tflops", type=float, default=None, help="per-GPU dense bf16 peak (TFLOP/s)")
    p.add_argument("--out", default=None)
    p.add_argument("--scratch", default="/tmp/bench_zero")
    a = p.parse_args()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    import torch

    from scaling_sweeper.base import flops
    from scaling_sweeper.base.model_config import config_for_rows, count_params
    from scaling_sweeper.train import strategy as memory

    gpu = a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
    a.sizes = a.sizes or (["M", "L", "XL"] if gpu else ["XS"])
    a.strategies = a.strategies or (["ddp", "zero2", "zero3"] if gpu else ["zero3"])
    a.batch = a.batch or (64 if gpu else 16)
    a.workers = a.workers or (torch.cuda.device_count() if gpu else 2)
    out = Path(a.out or REPO / "benchmarks" / "results" / ("zero_gpu.json" if gpu else "zero_cpu.json"))
    peak = a.peak_tflops
    name = torch.cuda.get_device_name(0) if gpu else "cpu"
    if gpu and peak is None:
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    from scaling_sweeper.base.private_dirs import embedded_ray_temp_dir

    ray.init(num_cpus=max(a.workers, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
             _temp_dir=str(embedded_ray_temp_dir()))  # Ray makes it 0777: under this user's private folder
    results = []
    tokens_per_step = a.batch * (a.seq_len - 1)
    try:
        for size in a.sizes:
            gcfg = config_for_rows(size, a.vocab, a.seq_len)
            _, n_incl = count_params(gcfg)
            if gpu:
                runs = [("single", single_process(size, a, "cuda"))]
            else:  # one thread, and as many threads as the workers have in total; the faster is the base
                torch.set_num_threads(1)
                runs = [("single", single_process(size, a, "cpu"))]
                torch.set_num_threads(a.workers)
                runs.append((f"single_{a.workers}threads", single_process(size, a, "cpu")))
                runs.sort(key=lambda r: r[1]["step_s"])
            for s in a.strategies:
                runs.append((s, distributed(size, s, a, gpu)))
            base = runs[0][1]["step_s"]
            for strategy, r in runs:
                tps = tokens_per_step / r["step_s"]
                row = {"size": size, "strategy": strategy, "N_incl": n_incl, "world": r["world"],
                       "batch": a.batch, "step_s": r["step_s"], "tokens_per_s": tps,
                       "ratio_to_single": r["step_s"] / base, "peak_mem_gib": r["peak_mem_gib"]}  # fmt: skip
                if peak:
                    row["mfu"] = flops.flops_per_token(n_incl) * tps / (r["world"] * peak * 1e12)
                    exact = flops.train_flops_exact(gcfg, tokens_per_step, a.seq_len - 1) / r["step_s"]
                    row["mfu_exact"] = exact / (r["world"] * peak * 1e12)
                if gpu and strategy != "single":
                    mb = a.micro_batch or a.batch // a.workers
                    est = {e.strategy: e for e in memory.estimate(gcfg, gpus=r["world"], micro_batch=mb,
                                                                  seq_len=a.seq_len - 1, strategies=(strategy,))}  # fmt: skip
                    row["est_mem_gib"] = est[strategy].total_gpu / memory.GIB
                results.append(row)
                print(f"{size:>4} {strategy:<7} world {row['world']}  step {row['step_s'] * 1e3:8.1f} ms  "
                      f"{tps:10.0f} tok/s  x{row['ratio_to_single']:.2f} vs single"
                      + (f"  MFU {row['mfu']:.3f}" if "mfu" in row else "")
                      + (f"  mem {row['peak_mem_gib']:.2f} GiB (est {row.get('est_mem_gib', 0):.2f})"
                         if row["peak_mem_gib"] is not None else ""), flush=True)  # fmt: skip
    finally:
        ray.shutdown()
    import deepspeed

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "device": name, "peak_tflops": peak, "torch": torch.__version__, "deepspeed": deepspeed.__version__,
        "ray": ray.__version__, "load_avg_1min": os.getloadavg()[0], "cpus": os.cpu_count(), "seq_len": a.seq_len, "vocab": a.vocab, "steps": a.steps, "warmup": a.warmup,
        "results": results,
    }, indent=2) + "\n")  # fmt: skip
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
