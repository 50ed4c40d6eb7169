"""The known entropy of a tokens folder made by a teacher model (no torch; read side only).

`sweeper data make --source teacher` (scaling_sweeper/evaluate/teacher.py, which also says how
the numbers are made) samples the token rows from a trained model and records, in the tokens
folder's index.json under `data_entropy`, the per-token entropy H of the distribution the rows
come from: the value a student's validation loss converges to (nats per non-pad target token,
counted the way training counts its loss). Beside index.json, `teacher_nll_val.npy` holds the
teacher's summed -log q and its number of non-pad targets for every validation row, in row order,
so the teacher's loss on exactly the validation rows a cell evaluates on (the first n_val rows)
is known too: a student's validation loss on those rows converges to that number, without the
sampling error of H.

Folders of real data (Pythia, files) have no such block: `read_known_entropy` returns None.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scaling_sweeper.base.errors import DataError

INDEX_KEY = "data_entropy"  # index.json key of the block
VAL_NLL_FILE = "teacher_nll_val.npy"  # (n_val, 2) float64: summed -log q (nats), non-pad targets


@dataclass(frozen=True)
class KnownEntropy:
    """The `data_entropy` block of a tokens folder's index.json (the fields training uses; the
    whole block is `block`)."""

    root: Path
    value: float  # H, nats per non-pad target token (all sampled rows)
    err: float  # standard error of `value` (ratio estimator over rows)
    n_rows: int  # rows it was estimated on
    val_file: str | None  # per-row sums of the val split (VAL_NLL_FILE), relative to root
    val_sha256: str | None
    block: dict

    def val_rows(self, n_val: int) -> float:
        """The teacher's loss (nats per non-pad target) on the first n_val validation rows, i.e.
        the exact limit of a student's validation loss on those rows. DataError if the per-row
        file is missing, altered or too short."""
        if self.val_file is None:
            raise DataError(f"{self.root}/index.json: {INDEX_KEY} names no per-row validation file")
        path = self.root / self.val_file
        try:
            blob = path.read_bytes()
        except OSError as e:
            raise DataError(f"{path}: teacher validation losses unreadable ({e})") from None
        if self.val_sha256 is not None:
            import hashlib

            if hashlib.sha256(blob).hexdigest() != self.val_sha256:
                raise DataError(f"{path}: corrupt (sha256 does not match {self.root}/index.json)")
        import io

        try:
            a = np.load(io.BytesIO(blob), allow_pickle=False)
        except ValueError as e:
            raise DataError(f"{path}: corrupt ({e})") from None
        if a.ndim != 2 or a.shape[1] != 2 or len(a) < n_val or n_val < 1:
            raise DataError(f"{path}: shape {a.shape}, need ({n_val}+, 2) for {n_val} validation rows")
        s, c = a[:n_val, 0].sum(), a[:n_val, 1].sum()
        return float(s / c) if c > 0 else math.nan

    def row_fields(self, n_val: int | None = None) -> dict[str, Any]:
        """The results-row keys: data_entropy, data_entropy_err and (with n_val) data_entropy_val."""
        out: dict[str, Any] = {"data_entropy": self.value, "data_entropy_err": self.err}
        if n_val is not None:
            out["data_entropy_val"] = self.val_rows(n_val)
        return out


def read_known_entropy(tokens_dir: str | Path) -> KnownEntropy | None:
    """The known entropy of a tokens folder, or None when its index.json has no `data_entropy`
    block (real data). DataError if index.json is unreadable or the block malformed."""
    root = Path(tokens_dir)
    p = root / "index.json"
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: unreadable shard index ({type(e).__name__}: {e})") from None
    block = d.get(INDEX_KEY) if isinstance(d, dict) else None
    if block is None:
        return None
    try:
        value, err = float(block["nats_per_token"]), float(block["err"])
        n_rows = int(block["n_rows"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{p}: malformed {INDEX_KEY} block ({type(e).__name__}: {e})") from None
    if not (math.isfinite(value) and value >= 0 and err >= 0):
        raise DataError(f"{p}: {INDEX_KEY} has entropy {value} +- {err}, not a finite entropy")
    val = block.get("val_rows") or {}
    return KnownEntropy(root=root, value=value, err=err, n_rows=n_rows, val_file=val.get("file"),
                        val_sha256=val.get("sha256"), block=block)
