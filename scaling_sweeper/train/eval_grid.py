"""Which training steps evaluate the validation loss, and what evaluating costs.

TrainConfig.eval_grid chooses the grid (the last step of a run always evaluates):

    linear  every `eval_every` steps: the behaviour before the grid existed, and the default
    log     the steps round(10^(k / eval_per_decade)), k = 0, 1, 2, ... (distinct, <= steps):
            evenly spaced in log(step), the axis learning curves and scaling fits use, so a short
            run gets points too (8 per decade: 15 points in 79 steps, 22 in 625, 37 in 48,077).
            The grid is absolute, not stretched to each run's length: runs of different lengths
            evaluate at the same steps, and a WSD trunk evaluates at every step its branches do
            below their branch point (train/branch.py copies those records).

Neither changes the trained model (an evaluation runs in eval mode without gradients and draws no
random numbers), so neither field is part of a cell id (sweep/cells.py ID_EXCLUDED).

Cost: an evaluation is one forward pass over the n_val validation rows, ~2 N_incl FLOPs per
token against 6 N_incl per training token (forward and backward), so

    evaluation FLOPs / training FLOPs = n_evals * n_val / (3 * steps * batch_size)

(`eval_flops_fraction`; benchmarks/bench_eval_grid.py measures it in seconds beside this).
"""

from __future__ import annotations

import functools
import math

from scaling_sweeper.train.config import TrainConfig


@functools.lru_cache(maxsize=64)
def log_grid(steps: int, per_decade: int) -> frozenset[int]:
    """The distinct steps round(10^(k / per_decade)) <= steps, k = 0, 1, ... (1 is always one)."""
    out: set[int] = set()
    k = 0
    while True:
        s = math.floor(10.0 ** (k / per_decade) + 0.5)
        if s > steps:
            return frozenset(out)
        out.add(s)
        k += 1


def is_eval_step(cfg: TrainConfig, step: int) -> bool:
    """Whether a run of `cfg` evaluates after optimizer step `step` (1-based: steps done)."""
    if step == cfg.steps:
        return True
    if cfg.eval_grid == "log":
        return step in log_grid(cfg.steps, cfg.eval_per_decade)
    return step % cfg.eval_every == 0


def eval_steps(cfg: TrainConfig) -> list[int]:
    """Every step at which a run of `cfg` evaluates, in order (the last step included)."""
    if cfg.eval_grid == "log":
        return sorted(log_grid(cfg.steps, cfg.eval_per_decade) | {cfg.steps})
    return sorted({*range(cfg.eval_every, cfg.steps + 1, cfg.eval_every), cfg.steps})


def eval_flops_fraction(cfg: TrainConfig, n_val_rows: int) -> float:
    """Evaluation FLOPs of a whole run over its training FLOPs (module doc): n_evals forward passes
    over `n_val_rows` rows against `steps * batch_size` rows trained (forward and backward)."""
    return len(eval_steps(cfg)) * n_val_rows / (3.0 * cfg.steps * cfg.batch_size)
