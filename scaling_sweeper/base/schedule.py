"""Learning-rate schedules (pure), one entry each in SCHEDULES: linear warmup, then either a
cosine decay to min_lr_ratio * peak (`cosine`, the default) or warmup-stable-decay (`wsd`: the
peak held constant, then a short cooldown to min_lr_ratio * peak over the last `decay_steps`).

WSD (Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training
Durations"): until the cooldown starts the learning rate does not depend on the run's length, so
runs of several lengths share one stable prefix and differ only in their cooldowns; a cooldown can
branch from a checkpoint of one stable run (`wsd_decay_start`, sweep/cells.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

DECAY_SHAPES = ("1-sqrt", "linear", "cosine")  # cooldown shapes of wsd (see _cooldown)


def lr_at(step: int, *, peak: float, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Learning rate for optimizer step `step` (0-based: the step about to be taken).

    Steps 0..warmup-1 ramp linearly to `peak` ((step+1)/warmup * peak); the remaining steps
    follow a half cosine from `peak` down to `min_lr_ratio * peak`, reached at the last step.
    """
    warmup = min(warmup_steps, total_steps)
    if step < warmup:
        return peak * (step + 1) / warmup
    decay_steps = total_steps - warmup
    if decay_steps <= 1:
        return peak
    progress = min(1.0, (step - warmup) / (decay_steps - 1))
    floor = min_lr_ratio * peak
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def wsd_decay_steps(total_steps: int, decay_fraction: float) -> int:
    """Cooldown steps of a wsd run of `total_steps`: round(decay_fraction * total_steps), at least
    one step when decay_fraction > 0 (0 means no cooldown: a stable run, e.g. a trunk)."""
    if decay_fraction <= 0:
        return 0
    return min(total_steps, max(1, round(decay_fraction * total_steps)))


def wsd_decay_start(total_steps: int, decay_fraction: float) -> int:
    """First cooldown step of a wsd run (0-based); steps before it are warmup or stable."""
    return total_steps - wsd_decay_steps(total_steps, decay_fraction)


def _cooldown(shape: str, progress: float) -> float:
    """Fraction of (peak - floor) left at cooldown progress in (0, 1]: 1 - sqrt(p), 1 - p or the
    half cosine (1 + cos(pi p)) / 2; each is 0 at the last step."""
    if shape == "1-sqrt":
        return 1.0 - math.sqrt(progress)
    if shape == "linear":
        return 1.0 - progress
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"decay_shape {shape!r} is not one of {list(DECAY_SHAPES)}")


def wsd_lr_at(step: int, *, peak: float, warmup_steps: int, total_steps: int, min_lr_ratio: float,
              decay_fraction: float, decay_shape: str = "1-sqrt") -> float:
    """Learning rate of step `step` (0-based) of a warmup-stable-decay run.

    Warmup as in lr_at ((step+1)/warmup * peak); then `peak` until the cooldown's first step
    d0 = total - decay_steps; cooldown step j = step - d0 + 1 (1..decay_steps) has progress
    p = j / decay_steps and lr = floor + (peak - floor) * shape(p), so the last step runs at the
    floor min_lr_ratio * peak. Before d0 the value does not depend on total_steps (the point of
    branching)."""
    warmup = min(warmup_steps, total_steps)
    if step < warmup:
        return peak * (step + 1) / warmup
    n_decay = wsd_decay_steps(total_steps, decay_fraction)
    d0 = total_steps - n_decay
    if step < d0 or n_decay == 0:
        return peak
    progress = min(1.0, (step - d0 + 1) / n_decay)
    floor = min_lr_ratio * peak
    return floor + (peak - floor) * _cooldown(decay_shape, progress)


def _cosine(step: int, peak: float, warmup_steps: int, total_steps: int, min_lr_ratio: float,
            decay_fraction: float, decay_shape: str) -> float:
    return lr_at(step, peak=peak, warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio)


def _wsd(step: int, peak: float, warmup_steps: int, total_steps: int, min_lr_ratio: float,
         decay_fraction: float, decay_shape: str) -> float:
    return wsd_lr_at(step, peak=peak, warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio,
                     decay_fraction=decay_fraction, decay_shape=decay_shape)


# TrainConfig.lr_schedule -> the function of (step, peak, warmup, total, min_lr_ratio, decay_fraction, decay_shape)
SCHEDULES: dict[str, Callable[..., float]] = {"cosine": _cosine, "wsd": _wsd}


def schedule_lr(name: str, step: int, *, peak: float, warmup_steps: int, total_steps: int, min_lr_ratio: float,
                decay_fraction: float = 0.2, decay_shape: str = "1-sqrt") -> float:
    """Learning rate of `step` under the schedule called `name` (a key of SCHEDULES)."""
    return SCHEDULES[name](step, peak, warmup_steps, total_steps, min_lr_ratio, decay_fraction, decay_shape)
