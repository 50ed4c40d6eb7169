"""WSD cooldown branches vs from-scratch runs of the same lengths, side by side in one run (issue 27).

    .venv/bin/python benchmarks/bench_wsd.py --data TOKENS [--size Pico] [--steps 100,200,400,800]
                                             [--decay 0.2] [--batch 16] [--lr 1e-2]
    .venv/bin/python benchmarks/bench_wsd.py --synthetic [...]   # learnable synthetic jet-like rows

For one size at fixed D (the tokens folder's whole train split, or --tokens) and run lengths
`--steps` (each rounded down so its cooldown starts on a log step, see sweep/phases.py), trains
  branched   phase wsd as planned: one stable trunk to the last cooldown start, then one cooldown
             branch per length (driver.run_cells_in_loop: the plan's cells in order, no Ray)
  wsd        every length from scratch with the same wsd schedule (the same cells, ids and configs)
  cosine     every length from scratch with the default cosine schedule (otherwise the same config)
one torch thread, in fresh folders, after a 5-step warm-up run. Prints the FLOPs executed by each (from the results rows:
C_spent of a trunk and a from-scratch run, C_charged of a branch) and their ratio next to the
closed form ((1 - f) T_k + f sum T) / sum T, the wall times, and per length the final validation
loss of each with its statistical error (the jet-to-jet spread of the last evaluation) and the
differences branched - wsd (0 when branching is exact) and branched - cosine in units of that error.
Results also go to benchmarks/out/bench_wsd.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _last_err(run: Path) -> float | None:
    from scaling_sweeper.base.runfolder import read_jsonl

    recs = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("val_loss") is not None]
    return recs[-1].get("val_loss_err") if recs else None


def synthetic_tokens(where: Path, n_train: int = 32000, n_val: int = 256, seq_len: int = 16,
                     n_content: int = 32) -> Path:
    """A tokens folder of learnable jet-like rows: [start, a, a+1, ..., a+k-1 (mod n_content), stop,
    pad ...] with k ~ U[3, seq_len - 2), seeds 0 (train), 1 (val), 2 (test)."""
    import numpy as np

    from scaling_sweeper.data.shards import write_shards

    def rows(n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.full((n, seq_len), n_content + 2, dtype=np.uint16)
        for i in range(n):
            k = int(rng.integers(3, seq_len - 2))
            out[i, 0] = n_content
            out[i, 1 : k + 1] = (rng.integers(0, n_content) + np.arange(k)) % n_content
            out[i, k + 1] = n_content + 1
        return out

    splits = {"train": rows(n_train, 0), "val": rows(n_val, 1), "test": rows(32, 2)}
    return write_shards(where, splits, vocab_size=n_content + 3, pad_token=n_content + 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="tokens folder")
    src.add_argument("--synthetic", action="store_true",
                     help="write a synthetic tokens folder (seq_len 16, 32 content tokens: each jet a run a, a+1, ...)")
    ap.add_argument("--size", default="Pico")
    ap.add_argument("--steps", default="100,200,400,800", help="run lengths in steps, comma-separated")
    ap.add_argument("--decay", type=float, default=0.2, help="decay_fraction")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--tokens", type=float, default=None, help="D (default: the whole train split)")
    ap.add_argument("--out", default=None, help="work folder (default: a temp folder)")
    args = ap.parse_args()

    import torch

    from scaling_sweeper.base.runfolder import read_result
    from scaling_sweeper.data.shards import ShardIndex
    from scaling_sweeper.sweep.driver import run_cells_in_loop
    from scaling_sweeper.sweep.reconcile import prepare
    from scaling_sweeper.sweep.spec import spec_from_dict
    from scaling_sweeper.train.single import run_trial

    torch.set_num_threads(1)
    work = Path(args.out or tempfile.mkdtemp(prefix="bench-wsd-"))
    data = synthetic_tokens(work / "tokens") if args.synthetic else Path(args.data).resolve()
    idx = ShardIndex.load(data)
    S = idx.seq_len
    D = int(args.tokens) if args.tokens else int(idx.splits["train"]["n_seq"]) * S
    lengths = [int(x) for x in args.steps.split(",")]
    spec = spec_from_dict({
        "name": "wsd", "phase": "wsd", "data": str(data), "storage": str(work / "branched"), "sizes": [args.size],
        "train": {"tokens": D, "batch_size": args.batch, "lr": args.lr, "lr_schedule": "wsd",
                  "decay_fraction": args.decay, "warmup_steps": max(1, lengths[0] // 20), "log_every": 10,
                  "eval_every": 10**9, "eval_batches": 16, "ckpt_every": 10**9, "keep_checkpoints": 1,
                  "threads": 1},
        "wsd": {"tokens_seen": [T * args.batch * S for T in lengths]},
    })
    spec, _, cells = prepare(spec)
    trunk, branches = cells[0], cells[1:]
    # warm-up outside the timings (imports, first-call costs), so no variant pays them
    run_trial(dataclasses.replace(branches[0].config, steps=5, lr_schedule="cosine", decay_fraction=0.2,
                                  decay_shape="1-sqrt"), work / "warmup")

    t0 = time.perf_counter()
    run_cells_in_loop(spec)
    wall_branched = time.perf_counter() - t0
    rows = {c.cell_id: read_result(spec.sweep_dir / c.cell_id) for c in cells}
    flops_branched = rows[trunk.cell_id]["C_spent"] + sum(rows[c.cell_id]["C_charged"] for c in branches)

    out: dict = {"size": args.size, "D": D, "batch": args.batch, "seq_len": S, "decay_fraction": args.decay,
                 "lengths": [c.steps for c in branches], "trunk_steps": trunk.steps, "runs": []}
    walls = {"wsd": 0.0, "cosine": 0.0}
    flops = {"wsd": 0.0, "cosine": 0.0}
    for c in branches:
        entry = {"steps": c.steps, "tokens_seen": c.tokens_seen, "passes": c.passes,
                 "branched": rows[c.cell_id]["final_val_loss"], "branched_err": _last_err(spec.sweep_dir / c.cell_id)}
        cos_cfg = dataclasses.replace(c.config, lr_schedule="cosine", decay_fraction=0.2, decay_shape="1-sqrt")
        for name, cfg in (("wsd", c.config), ("cosine", cos_cfg)):
            run = work / name / c.cell_id
            t = time.perf_counter()
            row = run_trial(cfg, run)
            walls[name] += time.perf_counter() - t
            flops[name] += row["C_spent"]
            entry[name], entry[f"{name}_err"] = row["final_val_loss"], _last_err(run)
        out["runs"].append(entry)

    T = [c.steps for c in branches]
    closed = ((1 - args.decay) * T[-1] + args.decay * sum(T)) / sum(T)
    out.update(flops_branched=flops_branched, flops_wsd=flops["wsd"], flops_cosine=flops["cosine"],
               ratio=flops_branched / flops["wsd"], ratio_closed_form_approx=closed,
               wall_branched_s=wall_branched, wall_wsd_s=walls["wsd"], wall_cosine_s=walls["cosine"])
    print(f"size {args.size}, D = {D:.4g} tokens, batch {args.batch}, seq_len {S}, decay_fraction {args.decay}, "
          f"lengths {T} steps (trunk {trunk.steps} steps)")
    print(f"FLOPs executed: branched {flops_branched:.4g}, from scratch (wsd) {flops['wsd']:.4g}, "
          f"ratio {out['ratio']:.4f} (closed form ((1-f) T_k + f sum T) / sum T = {closed:.4f}; the plan's "
          "cooldowns are round(f T) steps)")
    print(f"wall: branched {wall_branched:.1f} s, wsd from scratch {walls['wsd']:.1f} s "
          f"(ratio {wall_branched / walls['wsd']:.3f}), cosine from scratch {walls['cosine']:.1f} s")
    print(f"{'steps':>7}{'passes':>8}{'branched':>11}{'err':>8}{'wsd':>11}{'cosine':>11}{'err':>8}"
          f"{'br-wsd':>10}{'br-cos':>10}{'(sigma)':>9}")
    for e in out["runs"]:
        d_cos = e["branched"] - e["cosine"]
        err = ((e["branched_err"] or 0.0) ** 2 + (e["cosine_err"] or 0.0) ** 2) ** 0.5
        e["diff_wsd"], e["diff_cosine"], e["diff_cosine_sigma"] = e["branched"] - e["wsd"], d_cos, d_cos / err if err else None
        sig = f"{d_cos / err:>9.2f}" if err else f"{'n/a':>9}"
        print(f"{e['steps']:>7}{e['passes']:>8.3g}{e['branched']:>11.5f}{e['branched_err'] or float('nan'):>8.4f}"
              f"{e['wsd']:>11.5f}{e['cosine']:>11.5f}{e['cosine_err'] or float('nan'):>8.4f}"
              f"{e['diff_wsd']:>10.2g}{d_cos:>10.4f}{sig}")
    dest = REPO / "benchmarks" / "out"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "bench_wsd.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
