"""`sweeper memory`: per-GPU memory of DDP vs ZeRO-2 vs ZeRO-3 (+ offload) for a size, and the
strategy `auto` would pick for the declared GPU memory."""

from __future__ import annotations

import argparse
import json

from scaling_sweeper.data.token_layout import DEFAULT_SEQ_LEN, DEFAULT_VOCAB_SIZE, resolve_token_shape


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "memory",
        help="estimate per-GPU memory for DDP / ZeRO-2 / ZeRO-3 and the `auto` choice",
        description="Per-GPU memory of DDP, ZeRO-2, ZeRO-3 (and offload) for a size; the `auto` choice.",
    )
    p.add_argument("--size", required=True, help="size preset (Pico .. XXL)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per node (default 1)")
    p.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    p.add_argument("--gpu-mem", type=float, default=None, help="declared memory per GPU, GiB (e.g. 80)")
    p.add_argument("--micro-batch", type=int, default=32, help="sequences per GPU per micro-step (default 32)")
    p.add_argument("--data", default=None, help="tokens folder: read seq_len and vocab_size from it")
    p.add_argument("--seq-len", type=int, default=None,
                   help=f"tokens per row incl. start/stop (default: --data's, else {DEFAULT_SEQ_LEN})")
    p.add_argument("--vocab-size", type=int, default=None,
                   help=f"vocabulary (default: --data's, else {DEFAULT_VOCAB_SIZE}, the default tokenizer)")
    p.add_argument("--fp32", action="store_true", help="fp32 activations (CPU) instead of bf16")
    p.add_argument("--headroom", type=float, default=0.9, help="fraction of --gpu-mem usable (default 0.9)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from scaling_sweeper.base.quiet import quiet_deepspeed_accelerator

    quiet_deepspeed_accelerator()  # no "Setting accelerator to CPU" warning on a CPU-only machine
    from scaling_sweeper.train import strategy  # DeepSpeed: imported only when the command runs

    vocab, seq_len = resolve_token_shape(args.data, args.vocab_size, args.seq_len)
    usable = None if args.gpu_mem is None else args.gpu_mem * args.headroom
    ests = strategy.estimate_for_size(
        args.size, vocab_size=vocab, seq_len=seq_len, gpus=args.gpus, nodes=args.nodes,
        micro_batch=args.micro_batch, gpu_mem_gib=usable, bf16=not args.fp32,
    )
    chosen = next((e.strategy for e in ests if e.fits), None) if usable is not None else None
    if args.json:
        print(json.dumps({
            "size": args.size, "gpus": args.gpus, "nodes": args.nodes, "gpu_mem_gib": args.gpu_mem,
            "usable_gib": usable, "chosen": chosen,
            "strategies": [
                {"strategy": e.strategy, "model_states_gib": e.model_states_gpu / strategy.GIB,
                 "activations_gib": e.activations_gpu / strategy.GIB, "total_gib": e.total_gpu / strategy.GIB,
                 "host_gib": e.cpu / strategy.GIB, "fits": e.fits}
                for e in ests
            ],
        }, indent=2))
        return 0
    print(f"size {args.size}: {args.nodes} node(s) x {args.gpus} GPU(s), micro-batch {args.micro_batch}, "
          f"seq_len {seq_len}, vocab {vocab}, {'fp32' if args.fp32 else 'bf16'} (GiB)")
    print(strategy.format_table(ests, chosen))
    if usable is None:
        print("declare --gpu-mem GiB to see which strategy `auto` picks")
    elif chosen is None:
        print(f"nothing fits {usable:.1f} GiB usable per GPU: lower --micro-batch or add GPUs")
        return 1
    else:
        print(f"auto -> {chosen} (fits {usable:.1f} GiB usable of {args.gpu_mem:g} GiB per GPU)")
    return 0
