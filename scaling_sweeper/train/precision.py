"""A trial's device and numerics: the device, precision (auto | bf16 | fp32), TF32 matmuls,
autocast and torch.compile of the training loss.

Precision (TrainConfig.precision): `auto` is bf16 autocast on CUDA devices that support bf16,
fp32 elsewhere; `bf16` is bf16 autocast on any device (CPU included); `fp32` is plain fp32,
with TF32 matmuls on CUDA. Weights, gradients and optimizer state stay fp32 (autocast), so a
checkpoint resumes under any precision. The resolved precision is in the results row.

Compile (TrainConfig.compile): the training loss function is `torch.compile`d; the module
itself is never wrapped, so checkpoints hold the plain module's state dict and resume with
compile on or off. `compile` does not change the math and is not compared when a run resumes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import torch

from scaling_sweeper.base.errors import ConfigError


def resolve_device(name: str, field: str = "device") -> torch.device:
    """cpu | cuda[:N] | auto (cuda when available) -> a torch device; ConfigError naming `field`
    when CUDA is asked for but missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{field} {name!r} requested but CUDA is not available")
    return torch.device(name)


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


# torch.compile backend of `compile: true`. Tests set SWEEPER_COMPILE_BACKEND=aot_eager: the same
# graph capture (dynamo + AOTAutograd) without inductor's C++ code generation, which takes
# minutes on a small shared CPU machine.
COMPILE_BACKEND_ENV = "SWEEPER_COMPILE_BACKEND"


def compile_loss(fn: Callable[..., torch.Tensor], enabled: bool,
                 device: torch.device | None = None) -> Callable[..., torch.Tensor]:
    """torch.compile `fn` (e.g. a bound `model.training_loss`) when enabled. The module is not
    wrapped, so its state dict keeps plain keys (no `_orig_mod.`). On CUDA every batch shape gets
    its own static graph (dynamic=False: the loss has fixed shapes there); on CPU the loss keeps
    only non-pad positions (a data-dependent shape), so dynamic shapes stay allowed."""
    if not enabled:
        return fn
    dynamic = False if device is not None and device.type == "cuda" else None
    return torch.compile(fn, backend=os.environ.get(COMPILE_BACKEND_ENV, "inductor"), dynamic=dynamic)
