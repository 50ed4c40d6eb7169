"""DeepSpeed configs of the distributed strategies (the strategies: train/strategy.py).

Templates: `ddp` (DeepSpeed ZeRO stage 0: plain data parallel), `zero2`, `zero3`, `zero2_offload`
(optimizer states on the host), `zero3_offload` (optimizer states and parameters on the host), and
`zero3_offload_optimizer` (zero3_offload without the parameter offload). Each of the first five is
`TEMPLATES[name]`, mirrored in
`cluster/deepspeed/<name>.json` (regenerate with `python -m scaling_sweeper.train.deepspeed_config
cluster/deepspeed`; a test keeps the two identical). Template values "auto" are filled from the
trial by `build_ds_config`:

    train_batch_size                 = cfg.batch_size (the single-process global batch, rows)
    train_micro_batch_size_per_gpu   = micro_batch (rows per worker per micro-step)
    gradient_accumulation_steps      = batch_size / (micro_batch * world_size)  (must divide)
    gradient_clipping                = cfg.grad_clip (0 disables)
    bf16.enabled                     = on GPU; fp32 on CPU
    pin_memory                       = on GPU

A user template (TrainConfig.zero.ds_config, a JSON file) replaces the built-in one; zero.ds_overrides
(a nested mapping) is merged on top. Explicit values that contradict the trial (e.g. a train_batch_size
other than cfg.batch_size) raise ConfigError: the global batch is the single-process definition.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from scaling_sweeper.base.errors import ConfigError

AUTO = "auto"
TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "cluster" / "deepspeed"

_COMMON: dict[str, Any] = {
    "train_batch_size": AUTO,
    "train_micro_batch_size_per_gpu": AUTO,
    "gradient_accumulation_steps": AUTO,
    "gradient_clipping": AUTO,
    "bf16": {"enabled": AUTO},
    # the client optimizer is Ranger (pytorch_optimizer), not one of DeepSpeed's own
    "zero_allow_untested_optimizer": True,
    "steps_per_print": 1_000_000_000,
    "wall_clock_breakdown": False,
}
_OFFLOAD = {"device": "cpu", "pin_memory": AUTO}
_Z2 = {"stage": 2, "contiguous_gradients": True, "overlap_comm": False, "reduce_scatter": True,
       "reduce_bucket_size": 50_000_000, "allgather_bucket_size": 50_000_000}  # fmt: skip
_Z3 = {"stage": 3, "contiguous_gradients": True, "overlap_comm": False,
       "stage3_prefetch_bucket_size": 50_000_000, "stage3_param_persistence_threshold": 100_000,
       "stage3_max_live_parameters": 1_000_000_000}  # fmt: skip

TEMPLATES: dict[str, dict[str, Any]] = {
    "ddp": {**_COMMON, "zero_optimization": {"stage": 0}},
    "zero2": {**_COMMON, "zero_optimization": dict(_Z2)},
    "zero3": {**_COMMON, "zero_optimization": dict(_Z3)},
    # offloading with a client optimizer needs zero_force_ds_cpu_optimizer off (DeepSpeed asserts)
    "zero2_offload": {**_COMMON, "zero_force_ds_cpu_optimizer": False,
                      "zero_optimization": {**_Z2, "offload_optimizer": dict(_OFFLOAD)}},
    "zero3_offload": {**_COMMON, "zero_force_ds_cpu_optimizer": False,
                      "zero_optimization": {**_Z3, "offload_optimizer": dict(_OFFLOAD),
                                            "offload_param": dict(_OFFLOAD)}},
}  # fmt: skip


def load_template(name: str, path: str | Path | None = None) -> dict[str, Any]:
    """The template of strategy `name` (or the JSON file `path`, a user override)."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"ds_config: {p}: no such file")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"ds_config: {p}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"ds_config: {p}: top level must be an object")
        return data
    if name == "zero3_offload_optimizer":  # zero3 with only the optimizer states on the host
        t = copy.deepcopy(TEMPLATES["zero3_offload"])
        del t["zero_optimization"]["offload_param"]
        return t
    if name not in TEMPLATES:
        raise ConfigError(f"no DeepSpeed template for strategy {name!r}; have {sorted(TEMPLATES)}")
    return copy.deepcopy(TEMPLATES[name])


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def micro_batching(batch_size: int, world_size: int, micro_batch: int | None = None) -> tuple[int, int]:
    """(micro_batch, grad_accum) with micro_batch * grad_accum * world_size == batch_size.

    micro_batch None -> the largest that needs no accumulation (batch_size / world_size)."""
    if world_size < 1:
        raise ConfigError(f"world_size must be >= 1, got {world_size}")
    if batch_size % world_size:
        raise ConfigError(
            f"batch_size {batch_size} is not divisible by num_workers {world_size}: the global batch "
            "must split evenly over the workers"
        )
    per_worker = batch_size // world_size
    mb = per_worker if micro_batch is None else micro_batch
    if per_worker % mb:
        raise ConfigError(
            f"micro_batch_size {mb} does not divide batch_size / num_workers = {per_worker} "
            f"(batch_size {batch_size}, num_workers {world_size})"
        )
    return mb, per_worker // mb


def build_ds_config(
    strategy: str,
    *,
    batch_size: int,
    world_size: int,
    micro_batch: int | None = None,
    grad_clip: float = 1.0,
    bf16: bool = False,
    template: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete DeepSpeed config dict for `strategy` (see module doc)."""
    mb, gas = micro_batching(batch_size, world_size, micro_batch)
    cfg = _merge(load_template(strategy, template), overrides or {})
    fills = {
        "train_batch_size": batch_size,
        "train_micro_batch_size_per_gpu": mb,
        "gradient_accumulation_steps": gas,
        "gradient_clipping": float(grad_clip),
    }
    for k, v in fills.items():
        cur = cfg.get(k, AUTO)
        if cur == AUTO:
            cfg[k] = v
        elif k != "gradient_clipping" and int(cur) != v:
            raise ConfigError(
                f"DeepSpeed config sets {k}={cur}, but the trial needs {v} (global batch {batch_size} = "
                f"{mb} micro x {gas} accumulation x {world_size} workers)"
            )
    bf = cfg.setdefault("bf16", {})
    if bf.get("enabled", AUTO) == AUTO:
        bf["enabled"] = bool(bf16)
    if bf["enabled"] and not bf16:
        raise ConfigError("DeepSpeed config enables bf16, but this trial runs in fp32 (CPU)")
    zo = cfg.setdefault("zero_optimization", {"stage": 0})
    for key in ("offload_optimizer", "offload_param"):
        if isinstance(zo.get(key), dict) and zo[key].get("pin_memory", AUTO) == AUTO:
            zo[key]["pin_memory"] = bool(bf16)  # pinned host memory only helps with a GPU
    _reject_auto(cfg, "")
    return cfg


def _reject_auto(obj: Any, path: str) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _reject_auto(v, f"{path}.{k}" if path else k)
    elif obj == AUTO:
        raise ConfigError(f"DeepSpeed config: {path} is 'auto' but nothing fills it")


def write_templates(out_dir: str | Path = TEMPLATE_DIR) -> list[Path]:
    """Write TEMPLATES as `<out_dir>/<name>.json` (the files in cluster/deepspeed/)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, t in TEMPLATES.items():
        p = out / f"{name}.json"
        p.write_text(json.dumps(t, indent=2) + "\n")
        paths.append(p)
    return paths


if __name__ == "__main__":
    import sys

    for p in write_templates(sys.argv[1] if len(sys.argv) > 1 else TEMPLATE_DIR):
        print(p)
