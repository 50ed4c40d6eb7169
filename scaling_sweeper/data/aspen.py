"""Aspen Open Jets HDF5 loader.

Layout (one file): `PFCands` float (n_jets, 150, 11), per constituent px, py, pz, E (GeV) in the
first four features, zero-padded after the last constituent; `jet_kinematics` float (n_jets, 4)
with (pt, eta, phi, msoftdrop). Constituents are taken relative to the stored jet axis; the jet
mass stored in the common form is the soft-drop mass from the file.
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np

from scaling_sweeper.base.errors import DataError
from scaling_sweeper.data.jets import jets_from_p4


def count_aspen(path: str | Path) -> int:
    """Jets in an Aspen Open Jets file (metadata only)."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "jet_kinematics" not in f:
                raise DataError(f"{path}: no dataset 'jet_kinematics' (have {sorted(f.keys())}); not an Aspen Open Jets file")
            return int(f["jet_kinematics"].shape[0])
    except OSError as e:
        raise DataError(f"{path}: cannot read HDF5 ({e})") from None


def read_aspen(path: str | Path, *, start: int = 0, n_jets: int | None = None, max_constituents: int = 128,
               chunk: int = 50_000) -> ak.Array:
    """Read up to `n_jets` jets (None: all) from row `start` of an Aspen Open Jets HDF5 file,
    `chunk` rows at a time."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: Aspen Open Jets file missing")
    try:
        with h5py.File(path, "r") as f:
            for key in ("PFCands", "jet_kinematics"):
                if key not in f:
                    raise DataError(f"{path}: no dataset {key!r} (have {sorted(f.keys())}); not an Aspen Open Jets file")
            cands, kin = f["PFCands"], f["jet_kinematics"]
            if cands.ndim != 3 or cands.shape[2] < 4 or kin.ndim != 2 or kin.shape[1] < 4:
                raise DataError(f"{path}: PFCands {cands.shape} / jet_kinematics {kin.shape} have the wrong shape")
            if cands.shape[0] != kin.shape[0]:
                raise DataError(f"{path}: PFCands has {cands.shape[0]} jets, jet_kinematics {kin.shape[0]}")
            stop = cands.shape[0] if n_jets is None else min(start + n_jets, cands.shape[0])
            parts = []
            for lo in range(start, stop, chunk):
                hi = min(lo + chunk, stop)
                p4 = np.asarray(cands[lo:hi, :, :4], dtype=np.float64)
                k = np.asarray(kin[lo:hi, :4], dtype=np.float64)
                parts.append(_from_padded(p4, k, max_constituents))
    except OSError as e:
        raise DataError(f"{path}: cannot read HDF5 ({e})") from None
    if not parts:
        raise DataError(f"{path}: no jets")
    return ak.concatenate(parts) if len(parts) > 1 else parts[0]


def _from_padded(p4: np.ndarray, kin: np.ndarray, max_constituents: int) -> ak.Array:
    real = np.any(p4 != 0, axis=2)  # zero padding (all four momenta zero)
    counts = real.sum(axis=1)
    flat = p4[real]  # row-major: keeps the per-jet grouping
    px, py, pz, e = (ak.unflatten(flat[:, i], counts) for i in range(4))
    return jets_from_p4(px, py, pz, e, jet_pt=kin[:, 0], jet_eta=kin[:, 1], jet_phi=kin[:, 2],
                        jet_mass=kin[:, 3], max_constituents=max_constituents)
