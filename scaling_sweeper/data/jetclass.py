"""JetClass ROOT loader (uproot).

Layout: TTree `tree` with jagged branches `part_px, part_py, part_pz, part_energy` (GeV) and
scalar branches `jet_pt, jet_eta, jet_phi, jet_sdmass`. Constituents are taken relative to the
stored jet axis; the jet mass stored in the common form is the soft-drop mass from the file.
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak

from scaling_sweeper.base.errors import DataError
from scaling_sweeper.data.jets import jets_from_p4

BRANCHES = ("part_px", "part_py", "part_pz", "part_energy", "jet_pt", "jet_eta", "jet_phi", "jet_sdmass")


def count_jetclass(path: str | Path, tree: str = "tree") -> int:
    """Jets (entries of `tree`) in a JetClass ROOT file (metadata only)."""
    import uproot

    path = Path(path)
    try:
        with uproot.open(path) as f:
            if tree not in f:
                raise DataError(f"{path}: no TTree {tree!r} (have {f.keys()}); not a JetClass file")
            return int(f[tree].num_entries)
    except DataError:
        raise
    except Exception as e:  # uproot raises many types on damaged files
        raise DataError(f"{path}: cannot read ROOT file ({type(e).__name__}: {e})") from None


def read_jetclass(path: str | Path, *, start: int = 0, n_jets: int | None = None, max_constituents: int = 128,
                  tree: str = "tree") -> ak.Array:
    """Read up to `n_jets` jets (None: all) from entry `start` of a JetClass ROOT file."""
    import uproot

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: JetClass file missing")
    try:
        with uproot.open(path) as f:
            if tree not in f:
                raise DataError(f"{path}: no TTree {tree!r} (have {f.keys()}); not a JetClass file")
            t = f[tree]
            missing = [b for b in BRANCHES if b not in t.keys()]
            if missing:
                raise DataError(f"{path}: tree {tree!r} lacks branches {missing}")
            a = t.arrays(list(BRANCHES), entry_start=start,
                         entry_stop=None if n_jets is None else start + n_jets)
    except DataError:
        raise
    except Exception as e:  # uproot raises many types on damaged files
        raise DataError(f"{path}: cannot read ROOT file ({type(e).__name__}: {e})") from None
    if len(a) == 0:
        raise DataError(f"{path}: no jets")
    return jets_from_p4(
        a["part_px"], a["part_py"], a["part_pz"], a["part_energy"],
        jet_pt=ak.to_numpy(a["jet_pt"]), jet_eta=ak.to_numpy(a["jet_eta"]),
        jet_phi=ak.to_numpy(a["jet_phi"]), jet_mass=ak.to_numpy(a["jet_sdmass"]),
        max_constituents=max_constituents,
    )
