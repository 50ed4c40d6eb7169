"""Training batches from the first D tokens, exactly reproducible from (seed, step).

Rows are visited in epochs: epoch e is a permutation of all rows drawn from
`np.random.default_rng((seed, e))`, and the j-th row of step s is global sample
i = s * batch + j, i.e. row perm_{i // rows}[i % rows]. Nothing but (seed, step) is needed
to rebuild any batch, so a resumed run sees exactly the batches an uninterrupted run would.
At passes <= 1 every row is seen at most once.
"""

from __future__ import annotations

import numpy as np
import torch

from scaling_sweeper.model import IGNORE_INDEX


def rows_to_xy(rows: np.ndarray, pad_token: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, seq_len) uint16 token rows -> input (B, seq_len-1) and target (B, seq_len-1) long;
    targets that are padding become IGNORE_INDEX."""
    t = torch.from_numpy(rows.astype(np.int64, copy=False))
    x = t[:, :-1]
    y = t[:, 1:].clone()
    y[y == pad_token] = IGNORE_INDEX
    return x, y


def to_device_xy(rows: np.ndarray, pad_token: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """`rows_to_xy` on `device` without a host sync: on CUDA the rows go to pinned host memory
    and are copied non-blocking (the copy overlaps the previous step's kernels), and the padding
    mask is applied on the device. On CPU it is exactly `rows_to_xy`."""
    if device.type == "cpu":
        return rows_to_xy(rows, pad_token)
    t = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
    if device.type == "cuda":
        t = t.pin_memory()
    t = t.to(device, non_blocking=True)  # (B, seq_len) long
    x = t[:, :-1]
    y = t[:, 1:].masked_fill(t[:, 1:] == pad_token, IGNORE_INDEX)
    return x, y


class EpochSampler:
    """Row indices for each training step (see module doc)."""

    def __init__(self, n_rows: int, batch_size: int, seed: int):
        self.n_rows = n_rows
        self.batch_size = batch_size
        self.seed = seed
        self._epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def _perm_for(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._perm = np.random.default_rng((self.seed, epoch)).permutation(self.n_rows)
            self._epoch = epoch
        return self._perm

    def indices(self, step: int) -> np.ndarray:
        """Row indices (batch_size,) used by optimizer step `step` (0-based)."""
        first = step * self.batch_size
        out = np.empty(self.batch_size, dtype=np.int64)
        i = 0
        while i < self.batch_size:
            g = first + i
            epoch, pos = divmod(g, self.n_rows)
            take = min(self.batch_size - i, self.n_rows - pos)
            out[i : i + take] = self._perm_for(epoch)[pos : pos + take]
            i += take
        return out

    def rows_seen(self, steps: int) -> np.ndarray:
        """The distinct rows that steps 0 .. steps-1 use, sorted: every row once the run reaches a
        second epoch, else the first steps * batch_size rows of epoch 0's permutation."""
        total = steps * self.batch_size
        if total >= self.n_rows:
            return np.arange(self.n_rows, dtype=np.int64)
        return np.sort(self._perm_for(0)[:total])
