"""A trial's device and numerics: the device, precision (auto | bf16 | fp32), TF32 matmuls,
autocast and torch.compile of the training loss.

Precision (TrainConfig.precision): `auto` is bf16 autocast on CUDA devices that support bf16,
fp32 elsewhere; `bf16` is bf16 autocast on any device (CPU included); `fp32` is plain fp32,
with TF32 matmuls on CUDA. Weights, gradients and optimizer state stay fp32 (autocast), so a
checkpoint resumes under any precision. The resolved precision is in the results row.

Compile (TrainConfig.compile, `resolve_compile`): the training loss function is `torch.compile`d
(auto: where CUDA is used, not on the CPU); the module itself is never wrapped, so checkpoints
hold the plain module's state dict and resume with compile on or off. `compile` does not change
the math and is not compared when a run resumes. torch.compile's recompile limit is handled on
purpose (train/compile_limits.py): a worker that trains cell after cell keeps compiling, and an
eager fallback is warned about, never silent.

Device (TrainConfig.device, `resolve_device`): auto is cuda when available, else cpu. A run
resumes on the same kind of device (`device_kind`: cpu or cuda, auto resolved where it runs;
train/run_folder.py compares it): old run folders (device: cpu) resume on a CPU under the auto
default; a run is not silently continued on another kind (precision auto would change under it).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import torch

from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.train import compile_limits


def resolve_device(name: str, field: str = "device") -> torch.device:
    """cpu | cuda[:N] | auto (cuda when available) -> a torch device; ConfigError naming `field`
    when CUDA is asked for but missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{field} {name!r} requested but CUDA is not available")
    return torch.device(name)


def device_kind(name: str) -> str:
    """TrainConfig.device -> "cpu" | "cuda" (auto resolved here; cuda:N -> cuda)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if name.startswith("cuda") else name


def bf16_supported(device: torch.device) -> bool:
    """True where bf16 autocast runs natively: CPU always (emulated where needed), CUDA by device."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu"


def resolve_precision(precision: str, device: torch.device) -> str:
    """TrainConfig.precision -> "bf16" | "fp32" on `device`: auto is bf16 on CUDA with bf16 support
    (the rule planning applies without a device: train.config.expected_precision), fp32 elsewhere;
    bf16 where the device cannot run it is a ConfigError."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and bf16_supported(device) else "fp32"
    if precision == "bf16" and not bf16_supported(device):
        raise ConfigError(f"precision bf16 is not supported on {device}")
    return precision


def configure_matmul(device: torch.device) -> None:
    """TF32 matmuls and convolutions for fp32 work on CUDA (bf16 autocast leaves fp32 matmuls
    to the few ops autocast keeps in fp32). Process-wide; a no-op on CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast context for forward passes, or a no-op for fp32 (bit-identical to no context)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_compile(compile: bool | str, device: torch.device) -> bool:
    """TrainConfig.compile -> whether to compile on `device` (auto: on CUDA, off elsewhere)."""
    if compile == "auto":
        return device.type == "cuda"
    return bool(compile)


# torch.compile backend of `compile: true`. Tests set SWEEPER_COMPILE_BACKEND=aot_eager: the same
# graph capture (dynamo + AOTAutograd) without inductor's C++ code generation, which takes
# minutes on a small shared CPU machine.
COMPILE_BACKEND_ENV = "SWEEPER_COMPILE_BACKEND"


def compile_loss(fn: Callable[..., torch.Tensor], enabled: bool,
                 device: torch.device | None = None) -> Callable[..., torch.Tensor]:
    """torch.compile `fn` (e.g. a bound `model.training_loss`) when enabled. The module is not
    wrapped, so its state dict keeps plain keys (no `_orig_mod.`). On CUDA every batch shape gets
    its own static graph (dynamic=False: the loss has fixed shapes there); on CPU the loss keeps
    only non-pad positions (a data-dependent shape), so dynamic shapes stay allowed. Graphs of
    earlier trials in this process are dropped when the next one would pass torch.compile's
    recompile limit, and an eager fallback is warned about (train/compile_limits.py)."""
    if not enabled:
        return fn
    compile_limits.raise_recompile_limit()
    compile_limits.make_room(fn, 1)
    dynamic = False if device is not None and device.type == "cuda" else None
    compiled = torch.compile(fn, backend=os.environ.get(COMPILE_BACKEND_ENV, "inductor"), dynamic=dynamic)
    return compile_limits.watch(compiled, fn, "the compiled training loss")
