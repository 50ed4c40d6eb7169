"""`sweeper data make|tokenize|info`: make a jet dataset, tokenize it, show what a folder holds.

`--tokenizer` picks a tokenizer kind (binned, the default, or vq: the learned VQ-VAE); `sweeper
data tokenize --jets DIR --out DIR/tokens_vq --tokenizer vq` fits a new tokenizer on an
existing jets folder (or, with --tokenizer-file, encodes with one fitted before)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.data.token_layout import DEFAULT_N_BINS


def _bins(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bins wants three ints like 16,16,16, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--bins wants one or three ints, got {text!r}")
    return parts  # type: ignore[return-value]


def _binning(text: str) -> tuple[str, str, str]:
    parts = tuple(text.split(","))
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--binning wants one or three of uniform|quantile, got {text!r}")
    return parts  # type: ignore[return-value]


def _n_jets(text: str) -> int | None:
    if text.lower() in ("all", "none"):
        return None
    return int(float(text))


def _vq_setting(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--vq wants KEY=VALUE (a VQConfig field), got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def _tok_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", default="binned", metavar="KIND",
                   help="tokenizer kind: binned (fixed bins, default) | vq (learned VQ-VAE codebook)")
    p.add_argument("--codebook-size", type=int, default=None,
                   help="vq: codebook size (content tokens), default 8192")
    p.add_argument("--vq", type=_vq_setting, action="append", default=[], metavar="KEY=VALUE",
                   help="vq: any VQConfig field, e.g. --vq steps=3000 --vq n_layers=2 --vq device=cuda")
    p.add_argument("--fit-seed", type=int, default=0, help="seed of the tokenizer fit")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads for a vq fit/encode, or per worker for --source teacher (0: torch's "
                        "default; 1 on a busy machine)")
    p.add_argument("--bins", type=_bins, default=DEFAULT_N_BINS,
                   help="bins for (log pt, eta_rel, phi_rel), default 32,16,16 (vocab = product + 3)")
    p.add_argument("--binning", type=_binning, default=("uniform", "quantile", "quantile"),
                   help="per-feature binning: uniform|quantile (default uniform,quantile,quantile)")
    p.add_argument("--force", action="store_true", help="remake even if cached")


def register(sub) -> None:
    data = sub.add_parser("data", help="make and inspect jet datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    mk = dsub.add_parser("make", help="generate (Pythia 8) or load (Aspen/JetClass) jets, split and tokenize")
    mk.add_argument("--out", required=True, type=Path, help="dataset folder, e.g. data/jets")
    mk.add_argument("--source", choices=("pythia", "aspen", "jetclass", "teacher"), default="pythia",
                    help="pythia (generate), aspen / jetclass (read --input files) or teacher (sample token "
                         "rows from the trained model --teacher; its known entropy goes in tokens/index.json, "
                         "docs/calibration.md)")
    mk.add_argument("--teacher", type=Path, default=None,
                    help="--source teacher: a finished run folder (its newest checkpoint) or a checkpoint file "
                         "<run>/checkpoints/step_*.pt")
    mk.add_argument("--device", default="cpu", help="--source teacher: where the teacher samples (cpu | cuda | auto)")
    mk.add_argument("--batch-size", type=int, default=None,
                    help="--source teacher: rows per sampling batch (does not change the rows)")
    mk.add_argument("--input", nargs="+",
                    help="input files or quoted globs ('aoj/*.h5') for --source aspen (HDF5) / jetclass (ROOT), "
                         "read in order, file by file in chunks")
    mk.add_argument("--n-jets", type=_n_jets, default=None,
                    help="jets to generate (pythia, default 20000) or read at most (files, default all)")
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--workers", type=int, default=1,
                    help="local processes running chunks (the jets do not depend on it)")
    mk.add_argument("--chunk-jets", type=_n_jets, default=None,
                    help="jets per chunk: one seeded task and one parquet part each, the unit of resume "
                         "(default 5000; part of the cache key)")
    mk.add_argument("--address", default=None,
                    help="run the chunks as Ray tasks on this cluster (e.g. 127.0.0.1:6379, or auto inside "
                         "a Ray job); --out must be on storage every node sees")
    mk.add_argument("--insecure", action="store_true",
                    help="with --address: accept a Ray cluster that does not require an auth token "
                         "(anyone reaching it runs code)")
    mk.add_argument("--rows-per-shard", type=int, default=None,
                    help="token rows per shard file (default: ~1 GiB shards)")
    mk.add_argument("--pt-min", type=float, default=500.0, help="jet pt window low edge, GeV")
    mk.add_argument("--pt-max", type=float, default=650.0, help="jet pt window high edge, GeV")
    mk.add_argument("--eta-max", type=float, default=2.5, help="|jet eta| cut")
    mk.add_argument("--pthat-min", type=float, default=None, help="Pythia pT-hat cut, GeV (default 0.85*pt-min)")
    mk.add_argument("--max-constituents", type=int, default=128)
    mk.add_argument("--splits", default="0.8,0.1,0.1", help="train,val,test fractions")
    mk.add_argument("--no-tokenize", action="store_true", help="only write the jets parquet files")
    mk.add_argument("--no-progress", action="store_true")
    _tok_args(mk)
    mk.set_defaults(func=cmd_make)

    tk = dsub.add_parser("tokenize", help="fit the tokenizer on train.parquet and write token shards")
    tk.add_argument("--jets", required=True, type=Path, help="dataset folder with {train,val,test}.parquet")
    tk.add_argument("--out", type=Path, default=None, help="tokens folder (default JETS/tokens)")
    tk.add_argument("--max-constituents", type=int, default=128)
    tk.add_argument("--tokenizer-file", type=Path, default=None,
                    help="encode with this fitted tokenizer file (its kind must match --tokenizer) instead of fitting")
    tk.add_argument("--rows-per-shard", type=int, default=None,
                    help="token rows per shard file (default: ~1 GiB shards)")
    _tok_args(tk)
    tk.set_defaults(func=cmd_tokenize)

    info = dsub.add_parser("info", help="summarise a dataset or tokens folder")
    info.add_argument("path", type=Path)
    info.set_defaults(func=cmd_info)


def tokenize_config(args: argparse.Namespace):
    """The dataset.TokenizeConfig of the tokenizer options (ConfigError for a bad --vq value)."""
    import yaml

    from scaling_sweeper.data.dataset import TokenizeConfig

    vq: dict = {}
    for k, v in args.vq:
        try:
            vq[k] = yaml.safe_load(v)
        except yaml.YAMLError:
            raise ConfigError(f"--vq {k}={v}: not a value") from None
    if args.codebook_size is not None:
        vq["codebook_size"] = args.codebook_size
    if (vq or args.codebook_size) and args.tokenizer != "vq":
        raise ConfigError(f"--vq/--codebook-size are vq settings; --tokenizer is {args.tokenizer}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    tf = getattr(args, "tokenizer_file", None)
    return TokenizeConfig(n_bins=args.bins, max_constituents=args.max_constituents, binning=args.binning,
                          fit_seed=args.fit_seed, kind=args.tokenizer, vq=vq,
                          tokenizer_file=None if tf is None else str(tf),
                          rows_per_shard=getattr(args, "rows_per_shard", None))


def cmd_make(args: argparse.Namespace) -> int:
    if args.source == "teacher":
        return cmd_make_teacher(args)
    if args.teacher is not None:
        raise ConfigError("--teacher is only for --source teacher")
    from scaling_sweeper.data.dataset import make_dataset
    from scaling_sweeper.data.pythia import PythiaConfig

    try:
        splits = tuple(float(x) for x in args.splits.split(","))
    except ValueError:
        raise ConfigError(f"--splits wants three numbers like 0.8,0.1,0.1, got {args.splits!r}") from None
    n_jets = args.n_jets
    if args.source == "pythia" and n_jets is None:
        n_jets = 20000
    pythia = PythiaConfig(pt_min=args.pt_min, pt_max=args.pt_max, eta_max=args.eta_max,
                          pthat_min=args.pthat_min, max_constituents=args.max_constituents)
    from scaling_sweeper.evaluate.run import tokenizer_roundtrip_report

    extra = {"chunk_jets": args.chunk_jets} if args.chunk_jets is not None else {}
    executor = None
    if args.address:
        from scaling_sweeper.cluster.ray_tasks import RayTasks

        executor = RayTasks(args.address, insecure=args.insecure)
        executor.connect()  # an open cluster is refused before anything is written (--insecure overrides)
    make_dataset(
        args.out, source=args.source, n_jets=n_jets, seed=args.seed, workers=args.workers,
        input=args.input, pythia=pythia, max_constituents=args.max_constituents, splits=splits,
        executor=executor, tokenize=not args.no_tokenize, **extra,
        tokenizer=tokenize_config(args), roundtrip=tokenizer_roundtrip_report,
        progress=False if args.no_progress else None, force=args.force, verbose=True,
    )
    return 0


def cmd_make_teacher(args: argparse.Namespace) -> int:
    """`data make --source teacher`: rows sampled from a trained model (evaluate/teacher.py); the
    tokenizer is the teacher's, so the tokenizer options do not apply."""
    from scaling_sweeper.evaluate.teacher import TeacherDataConfig, make_teacher_dataset

    if args.teacher is None:
        raise ConfigError("--source teacher needs --teacher <run folder or checkpoint>")
    if args.input or args.address or args.no_tokenize:
        raise ConfigError("--input, --address and --no-tokenize do not apply to --source teacher")
    try:
        splits = tuple(float(x) for x in args.splits.split(","))
    except ValueError:
        raise ConfigError(f"--splits wants three numbers like 0.8,0.1,0.1, got {args.splits!r}") from None
    extra = {"chunk_jets": args.chunk_jets} if args.chunk_jets is not None else {}
    cfg = TeacherDataConfig(teacher=str(args.teacher), n_jets=20000 if args.n_jets is None else args.n_jets,
                            seed=args.seed, workers=args.workers, splits=splits, device=args.device,
                            batch_size=args.batch_size, threads=args.threads, rows_per_shard=args.rows_per_shard,
                            **extra)
    make_teacher_dataset(args.out, cfg, progress=False if args.no_progress else None, force=args.force,
                         verbose=True)
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    from scaling_sweeper.data.dataset import tokenize_dataset
    from scaling_sweeper.evaluate.run import tokenizer_roundtrip_report

    tokenize_dataset(args.jets, args.out, cfg=tokenize_config(args), roundtrip=tokenizer_roundtrip_report,
                     force=args.force, verbose=True)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from scaling_sweeper.data.dataset import describe

    print(json.dumps(describe(args.path), indent=1))
    return 0
