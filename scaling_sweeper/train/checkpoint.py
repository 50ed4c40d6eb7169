"""Training checkpoints: atomic, checksummed, with fallback past corrupt files.

A checkpoint is `checkpoints/step_{step:08d}.pt`, one `torch.save` file holding
    {"format_version": 1, "step": int, "sha256": hex digest of the state, "state": {...}}
where the digest covers every tensor's bytes and every scalar of `state` in a fixed order.
It is written to a temp file in the same folder, fsynced and renamed, so a crash leaves either
the old set of checkpoints or the new one. Loading verifies the digest; a file that does not
load or verify is renamed to `*.corrupt` (never deleted) and the previous one is tried.
Files load with `torch.load(weights_only=True)`: the state holds only tensors and primitives.
Model weights are stored under the plain module's keys (`plain_state_dict`), never with
torch.compile's `_orig_mod.` prefix, so compiled and eager runs resume from each other.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from scaling_sweeper.base.checkpoint_files import checkpoint_path, list_checkpoints
from scaling_sweeper.base.config import from_dict, load_yaml
from scaling_sweeper.base.errors import CheckpointError
from scaling_sweeper.base.model_config import config_for
from scaling_sweeper.base.runfolder import atomic_write
from scaling_sweeper.model import GPT
from scaling_sweeper.train.config import TrainConfig

CHECKPOINT_FORMAT_VERSION = 1


COMPILED_PREFIX = "_orig_mod."  # what torch.compile's module wrapper puts before every key


def plain_state_dict(sd: dict[str, Any]) -> dict[str, Any]:
    """A model state dict with torch.compile's `_orig_mod.` prefixes removed, so a checkpoint
    saved from (or loaded into) a compiled module matches the plain module's keys."""
    if not any(k.startswith(COMPILED_PREFIX) for k in sd):
        return sd
    return {k.removeprefix(COMPILED_PREFIX): v for k, v in sd.items()}


def state_digest(state: Any) -> str:
    """sha256 over a nested dict/list/tuple of tensors and primitives, in a fixed order."""
    h = hashlib.sha256()

    def walk(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().to("cpu").contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy())  # buffer protocol: no copy
        elif isinstance(obj, dict):
            h.update(b"{")
            for k in sorted(obj, key=repr):
                h.update(repr(k).encode())
                walk(obj[k])
            h.update(b"}")
        elif isinstance(obj, (list, tuple)):
            h.update(b"[")
            for v in obj:
                walk(v)
            h.update(b"]")
        else:
            h.update(repr(obj).encode())

    walk(state)
    return h.hexdigest()


def save_checkpoint(ckpt_dir: str | Path, step: int, state: dict[str, Any], keep: int | None = None,
                    protect: Iterable[int] = ()) -> Path:
    """Atomically write the checkpoint of `step`; then keep only the newest `keep` ones and those of
    the steps in `protect` (a WSD trunk's branch points)."""
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(d, step)
    payload = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "step": int(step),
        "sha256": state_digest(state),
        "state": state,
    }
    atomic_write(path, lambda f: torch.save(payload, f))
    if keep is not None:
        prune_checkpoints(d, keep, protect)
    return path


def prune_checkpoints(ckpt_dir: str | Path, keep: int, protect: Iterable[int] = ()) -> None:
    """Delete all but the newest `keep` good-named checkpoints (`*.corrupt` files and those of the
    steps in `protect` are kept)."""
    ckpts = list_checkpoints(ckpt_dir)
    keep_steps = set(protect)
    for step, p in ckpts[: max(0, len(ckpts) - max(1, keep))]:
        if step not in keep_steps:
            p.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify one checkpoint file -> its payload dict; CheckpointError if unusable."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, garbage, unpickling error, ...
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a checkpoint of format {CHECKPOINT_FORMAT_VERSION}")
    if state_digest(payload.get("state")) != payload.get("sha256"):
        raise CheckpointError(f"{path}: checksum mismatch (corrupt checkpoint)")
    return payload


def load_latest(ckpt_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """Payload of the newest good checkpoint, or None if there is none.

    A newer file that fails to load/verify is renamed to `<name>.corrupt` with a warning and
    the next older one is tried; nothing is deleted.
    """
    for _, p in reversed(list_checkpoints(ckpt_dir)):
        try:
            payload = load_checkpoint(p, map_location)
        except CheckpointError as e:
            bad = p.with_name(p.name + ".corrupt")
            n = 1
            while bad.exists():
                bad = p.with_name(f"{p.name}.corrupt{n}")
                n += 1
            p.rename(bad)
            warnings.warn(f"{e}; renamed to {bad.name}, falling back to an older checkpoint", stacklevel=2)
            continue
        payload["path"] = p
        return payload
    return None


def load_model(run_dir: str | Path, *, device: str | torch.device = "cpu",
               step: int | None = None) -> tuple[GPT, TrainConfig]:
    """The trained model of a run folder (newest good checkpoint, or the one of `step`) in eval mode,
    and its TrainConfig: (GPT, TrainConfig). Both trainers leave their final weights in this format."""
    run_dir = Path(run_dir)
    stored = load_yaml(run_dir / "config.yaml")
    derived = stored.pop("derived", {})
    cfg = from_dict(TrainConfig, stored)
    ckpt_dir = run_dir / "checkpoints"
    if step is None:
        payload = load_latest(ckpt_dir, map_location=device)
    else:
        matches = [p for s, p in list_checkpoints(ckpt_dir) if s == step]
        payload = load_checkpoint(matches[0], map_location=device) if matches else None
    if payload is None:
        raise CheckpointError(f"{run_dir}: no usable checkpoint" + (f" for step {step}" if step else ""))
    vocab = derived.get("vocab_size")
    block = derived.get("block_size")
    sd = plain_state_dict(payload["state"]["model"])
    if vocab is None or block is None:
        vocab, _ = sd["transformer.wte.weight"].shape
        block, _ = sd["transformer.wpe.weight"].shape
    model = GPT(config_for(cfg.size, int(vocab), int(block)))
    model.load_state_dict(sd)
    return model.to(device).eval(), cfg
