"""Jet observables: pure, vectorised functions on jets awkward arrays.

Input: a jets awkward Array with jagged fields `part_pt` (GeV), `part_eta_rel`, `part_phi_rel`
(constituents relative to the jet axis); jet scalar fields are ignored, so real and generated
jets go through exactly the same code.

Convention (identical for real and generated jets): every constituent is massless with
four-momentum (pt cos phi_rel, pt sin phi_rel, pt sinh eta_rel, pt cosh eta_rel), i.e. the jet
is seen in the frame where its axis sits at eta = phi = 0. A longitudinal boost shifts every eta
by the same amount and a rotation about the beam shifts every phi, so jet pT, jet mass and all
angular distances (N-subjettiness, ECFs) computed here equal the lab-frame values of the massless
constituents. jet_eta and jet_phi are the pseudorapidity and azimuth of the constituent sum IN THAT
FRAME (not the lab-frame jet direction, which generated jets do not have): near 0 for real jets,
they measure whether generated constituents are centred on the axis (as OmniJet-alpha's jet eta, phi). Angular distances use rapidity = pseudorapidity for the massless constituents and the
true rapidity of the (massive) subjet axes, phi differences wrapped to [-pi, pi).

N-subjettiness: tau_N = sum_i pt_i min_k dR_ik^beta / (sum_i pt_i R0^beta), beta = 1, R0 = 0.8,
axes = exclusive-kT subjets (kT distance, E-scheme recombination, clustered down to N objects;
the 1-subjet axis is the jet four-momentum itself). A jet with <= N constituents has tau_N = 0.
D2 (beta = 1) = e3 / e2^3 with the normalised energy correlation functions
e2 = sum_{i<j} z_i z_j dR_ij, e3 = sum_{i<j<k} z_i z_j z_k dR_ij dR_ik dR_jk, z_i = pt_i / sum pt.
Ratios with a zero denominator (a jet whose radiation is all on the axes) are defined as 0.
Empty jets get NaN for every float observable; `invalid_mask` flags them and non-finite values.
"""

from __future__ import annotations

import warnings

import awkward as ak
import numpy as np

#: every observable `compute_observables` can return
OBSERVABLES: tuple[str, ...] = (
    "jet_pt", "jet_mass", "n_constituents", "tau1", "tau2", "tau3", "tau21", "tau32", "d2", "jet_eta", "jet_phi",
)
#: units of each observable (and of its 1-D Wasserstein distance W1, which has the same unit)
OBSERVABLE_UNITS: dict[str, str] = {
    "jet_pt": "GeV", "jet_mass": "GeV", "n_constituents": "constituents", "tau1": "", "tau2": "", "tau3": "",
    "tau21": "", "tau32": "", "d2": "", "jet_eta": "", "jet_phi": "rad",
}
#: the five observables of the SWD (the reference paper's choice)
SWD_OBSERVABLES: tuple[str, ...] = ("jet_pt", "jet_mass", "n_constituents", "tau21", "tau32")

#: jets per chunk of the padded (jets x constituents x constituents) work arrays (memory bound)
_CHUNK_ELEMENTS = 1 << 22


def _wrap(dphi: np.ndarray) -> np.ndarray:
    """Wrap angle differences to [-pi, pi)."""
    return (dphi + np.pi) % (2.0 * np.pi) - np.pi


def n_constituents(jets: ak.Array) -> np.ndarray:
    """Number of constituents per jet (int64)."""
    return ak.to_numpy(ak.num(jets["part_pt"], axis=1)).astype(np.int64)


def jet_four_momentum(jets: ak.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(px, py, pz, E) in GeV of the sum of massless constituents, in the jet-axis frame
    (float64 throughout: E^2 - p^2 cancels badly in float32)."""
    pt, eta, phi = (ak.values_astype(jets[f], np.float64) for f in ("part_pt", "part_eta_rel", "part_phi_rel"))
    px = ak.to_numpy(ak.sum(pt * np.cos(phi), axis=1))
    py = ak.to_numpy(ak.sum(pt * np.sin(phi), axis=1))
    pz = ak.to_numpy(ak.sum(pt * np.sinh(eta), axis=1))
    e = ak.to_numpy(ak.sum(pt * np.cosh(eta), axis=1))
    return px, py, pz, e


def jet_pt(jets: ak.Array) -> np.ndarray:
    """Jet transverse momentum (GeV) from the constituents."""
    px, py, _, _ = jet_four_momentum(jets)
    return np.hypot(px, py)


def jet_mass(jets: ak.Array) -> np.ndarray:
    """Jet invariant mass (GeV) from massless constituents (m^2 < 0 round-off clipped to 0)."""
    px, py, pz, e = jet_four_momentum(jets)
    m2 = e * e - px * px - py * py - pz * pz
    return np.sqrt(np.clip(m2, 0.0, None))


def padded_constituents(jets: ak.Array, max_n: int | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dense (n_jets, max_n) float64 arrays pt, eta, phi (wrapped to [-pi, pi); zeros past the
    end) and the boolean mask."""
    num = n_constituents(jets)
    m = int(num.max(initial=0)) if max_n is None else int(max_n)
    m = max(m, 1)

    def dense(x: ak.Array) -> np.ndarray:
        return ak.to_numpy(ak.fill_none(ak.pad_none(x, m, axis=1, clip=True), 0.0)).astype(np.float64)

    mask = np.arange(m)[None, :] < num[:, None]
    return dense(jets["part_pt"]), dense(jets["part_eta_rel"]), _wrap(dense(jets["part_phi_rel"])), mask


def _size_chunks(num: np.ndarray, cost_per_jet) -> list[np.ndarray]:
    """Jet index groups of similar multiplicity (widths rounded up to 8), each small enough that
    len(group) * cost_per_jet(width) <= _CHUNK_ELEMENTS: little padding, bounded memory."""
    width = np.maximum(8, -(-num // 8) * 8)
    out = []
    for w in np.unique(width):
        idx = np.flatnonzero(width == w)
        step = max(1, _CHUNK_ELEMENTS // max(1, int(cost_per_jet(int(w)))))
        out += [idx[i:i + step] for i in range(0, len(idx), step)]
    return out


def _wrap_near(dphi: np.ndarray) -> np.ndarray:
    """`_wrap` for differences of angles already in [-pi, pi] (|dphi| <= 2 pi), without a modulo."""
    dphi = np.where(dphi >= np.pi, dphi - 2.0 * np.pi, dphi)
    return np.where(dphi < -np.pi, dphi + 2.0 * np.pi, dphi)


# ---------------------------------------------------------------- exclusive-kT subjet axes
def _rap_phi(px, py, pz, e):
    """Rapidity and phi of four-vectors (rapidity 0 for a zero vector)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        y = 0.5 * np.log((e + pz) / (e - pz))
    y = np.where(np.isfinite(y), y, 0.0)
    return y, np.arctan2(py, px)


def exclusive_kt_axes_numpy(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mask: np.ndarray,
                            n_axes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Own vectorised exclusive-kT clustering (E-scheme) of padded massless constituents.

    Merges the pair with the smallest min(pt_i^2, pt_j^2) dR_ij^2 (rapidity-phi) until `n_axes`
    objects remain in each jet (jets with fewer constituents keep them all). O(jets * n^3): the
    reference / fallback for `fastjet`. Returns axes rapidity, phi (n_jets, n_axes) and a validity
    mask (n_jets, n_axes).
    """
    b, m = pt.shape
    px, py = pt * np.cos(phi), pt * np.sin(phi)
    pz, e = pt * np.sinh(eta), pt * np.cosh(eta)
    px, py, pz, e = (np.where(mask, v, 0.0) for v in (px, py, pz, e))
    alive = mask.copy()
    y, ph = eta.copy(), phi.copy()
    kt2 = px * px + py * py
    rows = np.arange(b)
    iu = np.eye(m, dtype=bool)[None]

    def dist_matrix():
        dy = y[:, :, None] - y[:, None, :]
        dp = _wrap(ph[:, :, None] - ph[:, None, :])
        d = np.minimum(kt2[:, :, None], kt2[:, None, :]) * (dy * dy + dp * dp)
        ok = alive[:, :, None] & alive[:, None, :] & ~iu
        return np.where(ok, d, np.inf)

    d = dist_matrix()
    for _ in range(m - n_axes):
        todo = alive.sum(1) > n_axes
        if not todo.any():
            break
        flat = d.reshape(b, -1).argmin(1)
        i, j = np.minimum(flat // m, flat % m), np.maximum(flat // m, flat % m)
        r, i, j = rows[todo], i[todo], j[todo]
        for v in (px, py, pz, e):
            v[r, i] += v[r, j]
        alive[r, j] = False
        kt2[r, i] = px[r, i] ** 2 + py[r, i] ** 2
        y[r, i], ph[r, i] = _rap_phi(px[r, i], py[r, i], pz[r, i], e[r, i])
        # refresh row/column i and kill row/column j of the merged jets only
        dy = y[r, i][:, None] - y[r]
        dp = _wrap(ph[r, i][:, None] - ph[r])
        new = np.minimum(kt2[r, i][:, None], kt2[r]) * (dy * dy + dp * dp)
        new = np.where(alive[r], new, np.inf)
        new[np.arange(len(r)), i] = np.inf
        d[r, i, :] = new
        d[r, :, i] = new
        d[r, j, :] = np.inf
        d[r, :, j] = np.inf
    # gather the surviving objects, ordered by position (at most n_axes per jet)
    order = np.argsort(~alive, axis=1, kind="stable")[:, :n_axes]
    ay = np.take_along_axis(y, order, 1)
    aphi = np.take_along_axis(ph, order, 1)
    amask = np.take_along_axis(alive, order, 1)
    return ay, aphi, amask


def exclusive_kt_axes_fastjet(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mask: np.ndarray,
                              n_axes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Same as `exclusive_kt_axes_numpy` via fastjet's multi-event awkward interface (C++)."""
    return exclusive_kt_axes_fastjet_multi(pt, eta, phi, mask, [n_axes])[0]


def exclusive_kt_axes_fastjet_multi(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mask: np.ndarray,
                                    ns: list[int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Exclusive-kT axes for several subjet counts `ns` from ONE fastjet clustering per jet."""
    import fastjet  # optional dependency (physics extra)

    from scaling_sweeper.base.quiet import silence_fastjet_banner

    silence_fastjet_banner()

    b = pt.shape[0]
    num = mask.sum(1)
    out = {n: (np.zeros((b, n)), np.zeros((b, n)), np.zeros((b, n), dtype=bool)) for n in ns}
    for n, (ay, aphi, amask) in out.items():  # <= n constituents: the constituents are the axes
        few = num <= n
        k = min(n, pt.shape[1])
        ay[few, :k], aphi[few, :k], amask[few, :k] = eta[few, :k], phi[few, :k], mask[few, :k]
    n_top = max(ns)
    sel = np.flatnonzero(num > n_top)  # exclusive_jets(n) needs n <= multiplicity: fine for all ns
    if len(sel):
        counts = num[sel]
        flat = mask[sel]
        p, et, ph = pt[sel][flat], eta[sel][flat], phi[sel][flat]
        parts = ak.zip({
            "px": ak.unflatten(p * np.cos(ph), counts),
            "py": ak.unflatten(p * np.sin(ph), counts),
            "pz": ak.unflatten(p * np.sinh(et), counts),
            "E": ak.unflatten(p * np.cosh(et), counts),
        })
        jetdef = fastjet.JetDefinition(fastjet.kt_algorithm, 1000.0)  # R large: pairwise merges only
        with warnings.catch_warnings():  # fastjet warns about exclusive jets for any algorithm
            warnings.simplefilter("ignore", UserWarning)
            cs = fastjet.ClusterSequence(parts, jetdef)
            for n, (ay, aphi, amask) in out.items():
                sub = cs.exclusive_jets(n_jets=n)
                sy, sphi = _rap_phi(*(ak.to_numpy(ak.flatten(sub[f])).reshape(len(sel), n)
                                      for f in ("px", "py", "pz", "E")))
                ay[sel], aphi[sel], amask[sel] = sy, sphi, True
    lower = [n for n in ns if n < n_top]
    mid = np.flatnonzero((num > min(ns)) & (num <= n_top))  # need clustering for some n < n_top
    if lower and len(mid):
        w = max(1, int(num[mid].max()))
        sub_axes = exclusive_kt_axes_fastjet_multi(pt[mid, :w], eta[mid, :w], phi[mid, :w], mask[mid, :w], lower)
        for n, (sy, sphi, smask) in zip(lower, sub_axes):
            ay, aphi, amask = out[n]
            ay[mid], aphi[mid], amask[mid] = sy, sphi, smask
    return [out[n] for n in ns]


def _have_fastjet() -> bool:
    try:
        import fastjet  # noqa: F401
    except ImportError:
        return False
    return True


def nsubjettiness(jets: ak.Array, n_max: int = 3, *, beta: float = 1.0, r0: float = 0.8,
                  axes: str = "auto") -> np.ndarray:
    """tau_1..tau_{n_max} (n_jets, n_max) with exclusive-kT axes; `axes` in auto|fastjet|numpy."""
    if axes == "auto":
        axes = "fastjet" if _have_fastjet() else "numpy"
    if axes not in ("fastjet", "numpy"):
        raise ValueError(f"axes must be auto, fastjet or numpy, got {axes!r}")
    pt, eta, phi, mask = padded_constituents(jets)
    b = pt.shape[0]
    out = np.zeros((b, n_max))
    # 1-subjet axis = the jet four-momentum (everything merged)
    px = (pt * np.cos(phi)).sum(1)
    py = (pt * np.sin(phi)).sum(1)
    pz = (pt * np.sinh(eta)).sum(1)
    e = (pt * np.cosh(eta)).sum(1)
    y1, phi1 = _rap_phi(px, py, pz, e)
    axis_sets = [(y1[:, None], phi1[:, None], np.ones((b, 1), dtype=bool))]
    ns = list(range(2, n_max + 1))
    if ns and axes == "fastjet":
        axis_sets += exclusive_kt_axes_fastjet_multi(pt, eta, phi, mask, ns)
    else:
        axis_sets += [exclusive_kt_axes_numpy(pt, eta, phi, mask, n) for n in ns]
    num = mask.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = (pt * mask).sum(1) * r0**beta
        for n, (ay, aphi, amask) in enumerate(axis_sets, start=1):
            for idx in _size_chunks(num, lambda w, n=n: w * n):
                w = min(pt.shape[1], max(1, int(num[idx].max())))
                p, et, ph, msk = pt[idx, :w], eta[idx, :w], phi[idx, :w], mask[idx, :w]
                dy = et[:, :, None] - ay[idx, None, :]
                dp = _wrap_near(ph[:, :, None] - aphi[idx, None, :])
                dr = np.sqrt(dy * dy + dp * dp)
                if beta != 1:
                    dr = dr**beta
                dr = np.where(amask[idx, None, :], dr, np.inf).min(2)
                out[idx, n - 1] = np.where(msk, p * dr, 0.0).sum(1) / norm[idx]
    out[mask.sum(1) == 0] = np.nan
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0/0 (and x/0) defined as 0; NaNs propagate."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    return np.where(den == 0, 0.0, r)


def tau21(jets: ak.Array, **kw) -> np.ndarray:
    """N-subjettiness ratio tau2 / tau1 (beta = 1, R0 = 0.8, exclusive-kT axes)."""
    t = nsubjettiness(jets, 2, **kw)
    return _ratio(t[:, 1], t[:, 0])


def tau32(jets: ak.Array, **kw) -> np.ndarray:
    """N-subjettiness ratio tau3 / tau2 (beta = 1, R0 = 0.8, exclusive-kT axes)."""
    t = nsubjettiness(jets, 3, **kw)
    return _ratio(t[:, 2], t[:, 1])


def energy_correlations(jets: ak.Array, beta: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised energy correlation functions (e2, e3) per jet (pt-dR measure, dR^beta).

    e3 = trace((Z A)^3) / 6 with A_ij = dR_ij^beta, Z = diag(z): the i=j terms vanish since A_ii = 0.
    """
    pt, eta, phi, mask = padded_constituents(jets)
    b = pt.shape[0]
    num = mask.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = pt / pt.sum(1, keepdims=True)
    z = np.where(mask, z, 0.0)
    e2 = np.zeros(b)
    e3 = np.zeros(b)
    for idx in _size_chunks(num, lambda w: w * w):
        w = min(pt.shape[1], max(1, int(num[idx].max())))
        zz, et, ph = z[idx, :w], eta[idx, :w], phi[idx, :w]
        dy = et[:, :, None] - et[:, None, :]
        dp = _wrap_near(ph[:, :, None] - ph[:, None, :])
        a = np.sqrt(dy * dy + dp * dp)
        if beta != 1:
            a = a**beta
        za = zz[:, :, None] * a  # Z A (rows scaled by z): trace((Z A)^3) = sum_ijk z z z A A A
        e2[idx] = 0.5 * np.einsum("bij,bj->b", za, zz)
        e3[idx] = np.einsum("bij,bji->b", za @ za, za) / 6.0
    return e2, e3


def d2(jets: ak.Array, beta: float = 1.0) -> np.ndarray:
    """D2 = e3 / e2^3 (beta = 1 default); 0 for jets with e2 = 0, NaN for empty jets."""
    e2, e3 = energy_correlations(jets, beta)
    out = _ratio(e3, e2**3)
    out[n_constituents(jets) == 0] = np.nan
    return out


def compute_observables(jets: ak.Array, names: tuple[str, ...] | list[str] | None = None, *,
                        axes: str = "auto") -> dict[str, np.ndarray]:
    """Observables by name (default: all of OBSERVABLES) as float64 arrays of length n_jets.

    Empty jets get NaN for every observable except n_constituents (0).
    """
    names = tuple(OBSERVABLES if names is None else names)
    unknown = [n for n in names if n not in OBSERVABLES]
    if unknown:
        from scaling_sweeper.base.errors import ConfigError

        raise ConfigError(f"unknown observable(s) {unknown} (valid: {', '.join(OBSERVABLES)})")
    num = n_constituents(jets)
    empty = num == 0
    out: dict[str, np.ndarray] = {}
    if {"jet_pt", "jet_mass", "jet_eta", "jet_phi"} & set(names):
        px, py, pz, e = jet_four_momentum(jets)
        out["jet_pt"] = np.hypot(px, py)
        out["jet_mass"] = np.sqrt(np.clip(e * e - px * px - py * py - pz * pz, 0.0, None))
        with np.errstate(invalid="ignore", divide="ignore"):
            out["jet_eta"] = np.arcsinh(pz / out["jet_pt"])
        out["jet_phi"] = np.arctan2(py, px)
    if "n_constituents" in names:
        out["n_constituents"] = num.astype(np.float64)
    need_tau = max([{"tau1": 1, "tau2": 2, "tau21": 2, "tau3": 3, "tau32": 3}.get(n, 0) for n in names])
    if need_tau:
        t = nsubjettiness(jets, need_tau, axes=axes)
        for k in range(need_tau):
            out[f"tau{k + 1}"] = t[:, k]
        if need_tau >= 2:
            out["tau21"] = _ratio(t[:, 1], t[:, 0])
        if need_tau >= 3:
            out["tau32"] = _ratio(t[:, 2], t[:, 1])
    if "d2" in names:
        out["d2"] = d2(jets)
    result = {}
    for n in names:
        v = np.asarray(out[n], dtype=np.float64).copy()
        if n != "n_constituents":
            v[empty] = np.nan
        result[n] = v
    return result


def invalid_mask(observables: dict[str, np.ndarray]) -> np.ndarray:
    """True for jets with any non-finite observable or no constituents."""
    arrays = list(observables.values())
    if not arrays:
        raise ValueError("no observables given")
    bad = np.zeros(len(arrays[0]), dtype=bool)
    for v in arrays:
        bad |= ~np.isfinite(v)
    if "n_constituents" in observables:
        bad |= observables["n_constituents"] <= 0
    return bad
