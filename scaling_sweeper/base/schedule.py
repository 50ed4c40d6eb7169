"""Learning-rate schedule: linear warmup then cosine decay to min_lr_ratio * peak (pure)."""

from __future__ import annotations

import math


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
