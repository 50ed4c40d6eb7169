"""Jets in memory and on disk: one awkward record per jet, constituents relative to the jet axis.

In-memory form (every source maps to it; see docs/DESIGN.md):
    part_pt       jagged float32, GeV, sorted descending within each jet
    part_eta_rel  jagged float32, constituent eta - jet eta
    part_phi_rel  jagged float32, constituent phi - jet phi, wrapped to [-pi, pi)
    jet_pt, jet_eta, jet_phi, jet_mass    float64 scalars (GeV for pt and mass): the clustered
                  jet (Pythia/fastjet, particle masses included) or the file's values (Aspen,
                  JetClass: soft-drop mass). Observables summed from the stored constituents
                  treat them as massless (`constituent_jet_kinematics`): jet pt agrees to ~1e-3,
                  the mass comes out a few percent lower than jet_mass.

On disk: parquet via awkward/pyarrow list columns (`write_jets` / `read_jets`).
"""

from __future__ import annotations

import os
from pathlib import Path

import awkward as ak
import numpy as np

from scaling_sweeper.base.errors import DataError

PART_FIELDS = ("part_pt", "part_eta_rel", "part_phi_rel")
JET_FIELDS = ("jet_pt", "jet_eta", "jet_phi", "jet_mass")
FIELDS = PART_FIELDS + JET_FIELDS


def wrap_phi(phi: np.ndarray) -> np.ndarray:
    """Wrap angles (rad) to [-pi, pi)."""
    return np.mod(np.asarray(phi) + np.pi, 2 * np.pi) - np.pi


def make_jets(
    counts: np.ndarray,
    part_pt: np.ndarray,
    part_eta_rel: np.ndarray,
    part_phi_rel: np.ndarray,
    jet_pt: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    jet_mass: np.ndarray,
    *,
    max_constituents: int | None = None,
) -> ak.Array:
    """Build the jets record array from flat constituent arrays and per-jet `counts`.

    Constituents are (re)sorted by pt descending within each jet, truncated to
    `max_constituents`, and phi_rel is wrapped to [-pi, pi).
    """
    counts = np.asarray(counts, dtype=np.int64)
    flat = {
        "part_pt": np.asarray(part_pt, dtype=np.float32),
        "part_eta_rel": np.asarray(part_eta_rel, dtype=np.float32),
        "part_phi_rel": wrap_phi(np.asarray(part_phi_rel, dtype=np.float64)).astype(np.float32),
    }
    if any(len(v) != counts.sum() for v in flat.values()):
        raise DataError("constituent arrays do not match the per-jet counts")
    # sort by (jet, -pt): stable lexsort keeps the order of equal-pt constituents
    jet_of = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((-flat["part_pt"], jet_of))
    flat = {k: v[order] for k, v in flat.items()}
    if max_constituents is not None and counts.size and counts.max() > max_constituents:
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        local = np.arange(counts.sum()) - np.repeat(starts, counts)
        keep = local < max_constituents
        flat = {k: v[keep] for k, v in flat.items()}
        counts = np.minimum(counts, max_constituents)
    fields = {k: ak.unflatten(v, counts) for k, v in flat.items()}
    fields.update(
        jet_pt=np.ascontiguousarray(jet_pt, dtype=np.float64),
        jet_eta=np.ascontiguousarray(jet_eta, dtype=np.float64),
        jet_phi=np.ascontiguousarray(wrap_phi(np.asarray(jet_phi, dtype=np.float64))),
        jet_mass=np.ascontiguousarray(jet_mass, dtype=np.float64),
    )
    return ak.zip(fields, depth_limit=1)


def jets_from_p4(
    px: ak.Array,
    py: ak.Array,
    pz: ak.Array,
    energy: ak.Array,
    *,
    jet_pt: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    jet_mass: np.ndarray,
    max_constituents: int | None = 128,
) -> ak.Array:
    """Jets from jagged constituent four-momenta (GeV) and the file's jet kinematics.

    Constituent pt/eta/phi are computed from (px, py, pz); eta_rel and phi_rel are taken
    relative to the given jet axis (jet_eta, jet_phi). `energy` is accepted for the layout but
    only its length is checked (the in-memory form treats constituents as massless).
    """
    counts = np.asarray(ak.num(px, axis=1), dtype=np.int64)
    if not (np.array_equal(counts, ak.num(py, axis=1)) and np.array_equal(counts, ak.num(pz, axis=1))
            and np.array_equal(counts, ak.num(energy, axis=1))):
        raise DataError("px, py, pz, energy have different numbers of constituents")
    fx = np.asarray(ak.flatten(px), dtype=np.float64)
    fy = np.asarray(ak.flatten(py), dtype=np.float64)
    fz = np.asarray(ak.flatten(pz), dtype=np.float64)
    pt = np.hypot(fx, fy)
    eta = np.arcsinh(np.divide(fz, pt, out=np.zeros_like(fz), where=pt > 0))
    phi = np.arctan2(fy, fx)
    jet_eta = np.asarray(jet_eta, dtype=np.float64)
    jet_phi = np.asarray(jet_phi, dtype=np.float64)
    eta_rel = eta - np.repeat(jet_eta, counts)
    phi_rel = phi - np.repeat(jet_phi, counts)
    ok = pt > 0  # a constituent along the beam has no direction in (eta, phi): dropped
    if not ok.all():
        jet_of = np.repeat(np.arange(len(counts)), counts)
        counts = np.bincount(jet_of[ok], minlength=len(counts))
        pt, eta_rel, phi_rel = pt[ok], eta_rel[ok], phi_rel[ok]
    return make_jets(
        counts,
        pt,
        eta_rel,
        phi_rel,
        jet_pt,
        jet_eta,
        jet_phi,
        jet_mass,
        max_constituents=max_constituents,
    )


def constituent_jet_kinematics(jets: ak.Array) -> dict[str, np.ndarray]:
    """Jet pt (GeV), mass (GeV), eta and phi (relative to the stored axis) summed from the
    constituents, treated as massless. pt and mass do not depend on the axis (a shift in eta is a
    longitudinal boost, a shift in phi a rotation), so they compare directly with the true jet's."""
    pt, eta, phi = jets.part_pt, jets.part_eta_rel, jets.part_phi_rel
    px = ak.to_numpy(ak.sum(pt * np.cos(phi), axis=1)).astype(np.float64)
    py = ak.to_numpy(ak.sum(pt * np.sin(phi), axis=1)).astype(np.float64)
    pz = ak.to_numpy(ak.sum(pt * np.sinh(eta), axis=1)).astype(np.float64)
    e = ak.to_numpy(ak.sum(pt * np.cosh(eta), axis=1)).astype(np.float64)
    jpt = np.hypot(px, py)
    m2 = e**2 - px**2 - py**2 - pz**2
    return {
        "pt": jpt,
        "mass": np.sqrt(np.clip(m2, 0.0, None)),
        "eta": np.arcsinh(np.divide(pz, jpt, out=np.zeros_like(pz), where=jpt > 0)),
        "phi": np.arctan2(py, px),
    }


def check_jets(jets: ak.Array, where: str = "jets") -> ak.Array:
    """Raise DataError unless `jets` has the fields of the in-memory form."""
    missing = [f for f in FIELDS if f not in ak.fields(jets)]
    if missing:
        raise DataError(f"{where}: missing fields {missing} (have {ak.fields(jets)})")
    return jets


def write_jets(jets: ak.Array, path: str | Path) -> Path:
    """Write jets as parquet atomically (temp file + rename). Returns the path."""
    path = Path(path)
    check_jets(jets, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    ak.to_parquet(jets[list(FIELDS)], tmp)
    tmp.replace(path)
    return path


def read_jets(path: str | Path) -> ak.Array:
    """Read a jets parquet file; a missing, truncated or foreign file raises DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: jets file missing")
    try:
        jets = ak.from_parquet(path)
    except Exception as e:  # pyarrow raises several types for truncated/corrupt files
        raise DataError(f"{path}: corrupt or unreadable parquet ({type(e).__name__}: {e})") from None
    return check_jets(jets, str(path))


def split_jets(
    jets: ak.Array, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, ak.Array]:
    """Shuffle jets with `seed` and cut into train/val/test by `fractions` (deterministic)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise DataError(f"split fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    n = len(jets)
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    cuts = {"train": perm[:n_train], "val": perm[n_train : n_train + n_val], "test": perm[n_train + n_val :]}
    return {k: jets[v] for k, v in cuts.items()}
