"""Which sweeps may share one fit: those of the same phase and the same training schedule.

A scaling law fitted over cells of a model-size scan and a data-size scan, or over 20-step and
600-step trainings, mixes experiments that answer different questions. So a report over several
sweeps (`sweeper report all`, a suite such as `smoke`) groups them by `signature` and fits each
group on its own; `--pool` puts every sweep in one group on purpose. The signature is read from
each sweep's resolved spec (`<runs>/<sweep>/spec.yaml`): the phase and the sweep-wide training
settings that shape the schedule (SCHEDULE_FIELDS), and the tokens folder (`data`): sweeps on
different tokenizers or jets are compared side by side (analysis/tokenizer_compare.py), never
fitted as one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

#: sweep-wide training settings that make two sweeps different experiments
SCHEDULE_FIELDS = ("steps", "tokens", "batch_size", "lr", "warmup_steps", "min_lr_ratio", "weight_decay",
                   "dropout", "grad_clip")


def signature(spec: dict[str, Any]) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """(phase, schedule) of a resolved spec mapping; schedule = the SCHEDULE_FIELDS it sets (pure)."""
    train = spec.get("train") or {}
    sched = tuple((k, train[k]) for k in SCHEDULE_FIELDS if train.get(k) is not None)
    if spec.get("data"):  # another tokens folder (tokenizer, jets) is another experiment: losses differ in scale
        sched += (("data", str(spec["data"])),)
    if spec.get("phase") == "isoflop":
        iso = spec.get("isoflop") or {}
        sched += tuple((f"isoflop.{k}", v) for k, v in sorted(iso.items()))
    return str(spec.get("phase") or "?"), sched


def describe(sig: tuple[str, tuple[tuple[str, Any], ...]]) -> str:
    """`model_size; steps 20, batch_size 8` (for messages)."""
    phase, sched = sig
    return phase + ("; " + ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in sched)
                    if sched else "")


def read_signature(runs: str | Path, sweep: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    p = Path(runs) / sweep / "spec.yaml"
    try:
        spec = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError):
        spec = {}
    return signature(spec)


def pooling_groups(sigs: dict[str, tuple]) -> list[list[str]]:
    """Sweeps grouped by equal signature, in first-seen order (pure)."""
    groups: dict[tuple, list[str]] = {}
    for name, sig in sigs.items():
        groups.setdefault(sig, []).append(name)
    return list(groups.values())
