"""`sweeper sizes` (the model ladder) and `sweeper train` (one resumable trial)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scaling_sweeper.base.config import apply_overrides, from_dict, load_yaml
from scaling_sweeper.data.token_layout import DEFAULT_SEQ_LEN, resolve_token_shape
from scaling_sweeper.data.token_layout import DEFAULT_VOCAB_SIZE as DEFAULT_VOCAB


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sizes", help="print the model size ladder (N, N_incl, FLOPs/token, lr)")
    p.add_argument("--vocab", type=int, default=None, help=f"vocabulary size (default {DEFAULT_VOCAB})")
    p.add_argument("--seq-len", type=int, default=None, help=f"token row length (default {DEFAULT_SEQ_LEN})")
    p.add_argument("--data", default=None, help="tokens folder to take vocab and seq_len from")
    p.set_defaults(func=cmd_sizes)

    t = subparsers.add_parser(
        "train", help="train one model into a run folder (resumes if restarted)",
        description="Train one model; run again with the same arguments to resume after a kill.",
    )
    t.add_argument("--config", default=None, help="YAML file of TrainConfig fields (flags override it)")
    t.add_argument("--size", default=None, help="model preset (see `sweeper sizes`)")
    t.add_argument("--data", default=None, help="tokens folder (index.json + train.bin/val.bin)")
    t.add_argument("--tokens", default=None, help="D: training tokens, e.g. 2e6")
    t.add_argument("--steps", default=None, help="optimizer steps, e.g. 300")
    t.add_argument("--batch-size", default=None, help="rows per step")
    t.add_argument("--lr", default=None, help="peak learning rate (default: the preset's)")
    t.add_argument("--seed", default=None)
    t.add_argument("--out", required=True, help="run folder, e.g. runs/manual/pico")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any TrainConfig field, e.g. --set eval_every=50 (repeatable)")
    t.add_argument("--quiet", action="store_true", help="print only the final line")
    t.set_defaults(func=cmd_train)


def cmd_sizes(args: argparse.Namespace) -> int:
    from scaling_sweeper.base.flops import flops_per_token, forward_flops_per_token_exact
    from scaling_sweeper.base.model_config import SIZES, config_for_rows, count_params

    vocab, seq_len = resolve_token_shape(args.data, args.vocab, args.seq_len)
    print(f"vocab {vocab}, seq_len {seq_len} (context {seq_len - 1}); embeddings tied; "
          f"C = 6 N_incl per token, exact = Chinchilla count with attention")  # fmt: skip
    head = f"{'size':<5} {'layers':>6} {'width':>6} {'heads':>5} {'N':>10} {'N_incl':>10} " \
           f"{'FLOPs/token':>12} {'exact':>10} {'lr':>7}"  # fmt: skip
    print(head)
    print("-" * len(head))
    for name, p in SIZES.items():
        cfg = config_for_rows(name, vocab, seq_len)
        n, n_incl = count_params(cfg)
        exact = 3 * forward_flops_per_token_exact(cfg, seq_len - 1)
        print(f"{name:<5} {p.n_layer:>6} {p.d_model:>6} {p.n_head:>5} {n:>10.3e} {n_incl:>10.3e} "
              f"{flops_per_token(n_incl):>12.3e} {exact:>10.3e} {p.lr:>7.0e}")  # fmt: skip
    return 0


def build_train_config(args: argparse.Namespace):
    """TrainConfig from --config, the named flags, then --set overrides (strings like 2e6 accepted)."""
    from scaling_sweeper.train.config import TrainConfig

    data: dict = load_yaml(args.config) if args.config else {}
    data.pop("derived", None)
    flags = {"size": args.size, "data": args.data, "tokens": args.tokens, "steps": args.steps,
             "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}  # fmt: skip
    data.update({k: v for k, v in flags.items() if v is not None})
    data = apply_overrides(data, args.overrides)
    return from_dict(TrainConfig, data)


def cmd_train(args: argparse.Namespace) -> int:
    from scaling_sweeper.train.lifecycle import Progress
    from scaling_sweeper.train.single import run_trial

    cfg = build_train_config(args)
    out = Path(args.out)

    def show(p: Progress) -> None:
        if args.quiet:
            return
        parts = [f"step {p.step:>6}/{p.steps}", f"tokens {p.tokens_seen:.3e}", f"C {p.flops:.3e}"]
        if p.train_loss is not None:
            parts.append(f"train {p.train_loss:.4f}")
        if p.val_loss is not None:
            parts.append(f"val {p.val_loss:.4f}")
        parts.append(f"lr {p.lr:.2e}")
        if p.tokens_per_s:
            parts.append(f"{p.tokens_per_s:,.0f} tok/s")
        if p.checkpoint is not None:
            parts.append(f"ckpt {p.checkpoint.name}")
        print("  ".join(parts), flush=True)

    if cfg.strategy == "single":
        row = run_trial(cfg, out, on_progress=show)
    else:
        from scaling_sweeper.train.zero import run_distributed_trial

        row = run_distributed_trial(cfg, out, on_progress=show)
    if row.get("status") != "done":
        print(f"run {out}: {row.get('status')} {row.get('error') or ''}".rstrip(), file=sys.stderr)
        return 1
    print(f"final validation loss {row['final_val_loss']:.4f} (best {row['best_val_loss']:.4f}), "
          f"N={row['N']:.3e}, D={row['D']:.3e}, C={row['C_spent']:.3e} FLOPs, run folder {out}")  # fmt: skip
    return 0
