"""Energy-flow polynomials (EFPs, Komiske, Metodiev, Thaler 2018) with d <= 4: the 36 jet features
of the FPD and KPD (Kansal et al. 2023, `jetnet.evaluation.get_fpd_kpd_jet_features`).

An EFP is a multigraph G: EFP_G = sum_{i_1..i_N} z_{i_1} ... z_{i_N} prod_{(k,l) in G} theta_{i_k i_l}
over the constituents of a jet. JetNet computes them with `energyflow.EFPSet(("d<=", 4),
measure="hadr", beta=1, normed=None, coords="ptyphim")` on JetNet-format jets, i.e.
z_i = pT_i (JetNet's constituent pT is relative, pT_i / pT_jet) and
theta_ij = sqrt(dy_ij^2 + dphi_ij^2) (massless constituents: y = eta; dphi wrapped to [-pi, pi]).
Here z_i = pT_i / pT_jet with pT_jet the pT of the constituent sum (observables.jet_pt), the same
for real and generated jets, so the features are JetNet's for relative-pT jets.

Why not `energyflow` itself: energyflow 1.4.0 requires `wasserstein`, whose only release (1.1.0)
pins numpy < 2, and this project runs numpy 2. The 36 EFPs are computed here instead, vectorised
over jets (closed forms per connected graph, disconnected graphs as products of their components).
EFP_GRAPHS lists energyflow's graphs in energyflow's order (so column k is energyflow's EFP k);
tests/test_eval_efp.py checks every graph against a brute-force einsum of its definition and all 36
columns against values energyflow 1.4.0 computed (tests/data/efp_energyflow_reference.npz, made
by tests/data/make_efp_reference.py in a separate numpy < 2 environment).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import awkward as ak
import numpy as np

from scaling_sweeper.evaluate.observables import _size_chunks, _wrap_near, jet_pt, padded_constituents

#: energyflow's d <= 4 EFP graphs (edge lists) in energyflow's order; [] is the one-vertex graph
EFP_GRAPHS: tuple[tuple[tuple[int, int], ...], ...] = (
    (),
    ((0, 1),),
    ((0, 1), (0, 1)),
    ((0, 1), (0, 1), (0, 1)),
    ((0, 1), (0, 1), (0, 1), (0, 1)),
    ((0, 1), (0, 2)),
    ((0, 1), (0, 2), (0, 2)),
    ((0, 1), (0, 2), (0, 2), (0, 2)),
    ((0, 1), (0, 1), (0, 2), (0, 2)),
    ((0, 1), (0, 2), (1, 2)),
    ((0, 1), (0, 2), (0, 2), (1, 2)),
    ((0, 1), (0, 2), (0, 3)),
    ((0, 1), (0, 2), (0, 2), (0, 3)),
    ((0, 1), (0, 2), (1, 3)),
    ((0, 1), (0, 2), (0, 2), (1, 3)),
    ((0, 1), (0, 1), (0, 2), (1, 3)),
    ((0, 1), (0, 2), (1, 2), (0, 3)),
    ((0, 1), (0, 2), (1, 3), (2, 3)),
    ((0, 1), (0, 2), (0, 3), (0, 4)),
    ((0, 1), (0, 2), (0, 3), (1, 4)),
    ((0, 1), (0, 2), (1, 3), (2, 4)),
    ((0, 1), (2, 3)),
    ((0, 1), (2, 3), (2, 3)),
    ((0, 1), (2, 3), (2, 3), (2, 3)),
    ((0, 1), (0, 1), (2, 3), (2, 3)),
    ((0, 1), (2, 3), (2, 4)),
    ((0, 1), (0, 1), (2, 3), (2, 4)),
    ((0, 1), (2, 3), (2, 4), (2, 4)),
    ((0, 1), (2, 3), (2, 4), (3, 4)),
    ((0, 1), (2, 3), (4, 5)),
    ((0, 1), (2, 3), (2, 4), (2, 5)),
    ((0, 1), (2, 3), (2, 4), (3, 5)),
    ((0, 1), (0, 2), (3, 4), (3, 5)),
    ((0, 1), (2, 3), (4, 5), (4, 5)),
    ((0, 1), (2, 3), (4, 5), (4, 6)),
    ((0, 1), (2, 3), (4, 5), (6, 7)),
)
N_EFPS = len(EFP_GRAPHS)  # 36


def canonical(edges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """Canonical form of a multigraph without isolated vertices (the lexicographically smallest
    sorted edge list over all vertex relabellings; fine for the <= 5 vertices of a connected
    d <= 4 graph). The empty graph stands for the one-vertex graph."""
    verts = sorted({v for e in edges for v in e})
    best = None
    for perm in itertools.permutations(range(len(verts))):
        m = dict(zip(verts, perm))
        form = tuple(sorted(tuple(sorted((m[a], m[b]))) for a, b in edges))
        if best is None or form < best:
            best = form
    return best if best is not None else ()


def components(edges: tuple[tuple[int, int], ...]) -> list[tuple[tuple[int, int], ...]]:
    """Edge lists of the connected components ([()] for the one-vertex graph)."""
    if not edges:
        return [()]
    parent: dict[int, int] = {}

    def find(v: int) -> int:
        while parent.setdefault(v, v) != v:
            v = parent[v]
        return v

    for a, b in edges:
        parent[find(a)] = find(b)
    groups: dict[int, list[tuple[int, int]]] = {}
    for e in edges:
        groups.setdefault(find(e[0]), []).append(e)
    return [tuple(g) for g in groups.values()]


class _Jet:
    """Per-chunk building blocks: z (b, n), theta powers A^k (b, n, n) elementwise, products."""

    def __init__(self, z: np.ndarray, a: np.ndarray):
        self.z, self.a = z, a
        self._cache: dict[str, np.ndarray] = {}

    def pow(self, k: int) -> np.ndarray:  # elementwise theta^k
        key = f"A{k}"
        if key not in self._cache:
            self._cache[key] = self.a if k == 1 else self.a**k
        return self._cache[key]

    def az(self, k: int = 1) -> np.ndarray:  # (A^k z)_i = sum_j theta_ij^k z_j
        key = f"A{k}z"
        if key not in self._cache:
            self._cache[key] = np.einsum("bij,bj->bi", self.pow(k), self.z)
        return self._cache[key]

    def u(self) -> np.ndarray:  # z_i (A z)_i: the weight of a vertex with one leaf attached
        return self.z * self.az(1)

    def au(self) -> np.ndarray:  # (A u)_i
        if "Au" not in self._cache:
            self._cache["Au"] = np.einsum("bij,bj->bi", self.a, self.u())
        return self._cache["Au"]

    def m2(self) -> np.ndarray:  # (Z A)^2, Z = diag(z)
        if "M2" not in self._cache:
            m = self.z[:, :, None] * self.a
            self._cache["M2"] = m @ m
        return self._cache["M2"]

    def quad(self, x: np.ndarray, k: int, y: np.ndarray) -> np.ndarray:  # x^T A^k y
        return np.einsum("bi,bij,bj->b", x, self.pow(k), y)


def _triangle(j: _Jet) -> np.ndarray:  # trace((ZA)^3) = sum_ab [(ZA)^2]_ab (ZA)_ba
    return np.einsum("bij,bj,bji->b", j.m2(), j.z, j.a)


def _triangle_double(j: _Jet) -> np.ndarray:  # trace((ZA)^2 Z A^2)
    return np.einsum("bij,bj,bji->b", j.m2(), j.z, j.pow(2))


def _paw(j: _Jet) -> np.ndarray:  # sum_a (Az)_a [(ZA)^3]_aa: triangle with a pendant edge at a
    return np.einsum("bi,bij,bj,bji->b", j.az(1), j.m2(), j.z, j.a)


def _c4(j: _Jet) -> np.ndarray:  # trace((ZA)^4) = sum_ab [(ZA)^2]_ab [(ZA)^2]_ba
    m2 = j.m2()
    return np.einsum("bij,bji->b", m2, m2)


#: closed forms of the connected graphs (keyed by canonical edge list); z = weights, A = theta
_CONNECTED: dict[tuple[tuple[int, int], ...], Callable[[_Jet], np.ndarray]] = {
    (): lambda j: j.z.sum(1),
    ((0, 1),): lambda j: j.quad(j.z, 1, j.z),
    ((0, 1), (0, 1)): lambda j: j.quad(j.z, 2, j.z),
    ((0, 1), (0, 1), (0, 1)): lambda j: j.quad(j.z, 3, j.z),
    ((0, 1), (0, 1), (0, 1), (0, 1)): lambda j: j.quad(j.z, 4, j.z),
    # trees with a centre vertex c: z_c times one factor (A^k z)_c per edge bundle to a leaf
    ((0, 1), (0, 2)): lambda j: (j.z * j.az(1) ** 2).sum(1),
    ((0, 1), (0, 2), (0, 2)): lambda j: (j.z * j.az(1) * j.az(2)).sum(1),
    ((0, 1), (0, 2), (0, 2), (0, 2)): lambda j: (j.z * j.az(1) * j.az(3)).sum(1),
    ((0, 1), (0, 1), (0, 2), (0, 2)): lambda j: (j.z * j.az(2) ** 2).sum(1),
    ((0, 1), (0, 2), (0, 3)): lambda j: (j.z * j.az(1) ** 3).sum(1),
    ((0, 1), (0, 2), (0, 2), (0, 3)): lambda j: (j.z * j.az(1) ** 2 * j.az(2)).sum(1),
    ((0, 1), (0, 2), (0, 3), (0, 4)): lambda j: (j.z * j.az(1) ** 4).sum(1),
    # paths: u = z (A z) is an inner vertex carrying one leaf
    ((0, 1), (0, 2), (1, 3)): lambda j: j.quad(j.u(), 1, j.u()),
    ((0, 1), (0, 2), (0, 2), (1, 3)): lambda j: j.quad(j.z * j.az(2), 1, j.u()),
    ((0, 1), (0, 1), (0, 2), (1, 3)): lambda j: j.quad(j.u(), 2, j.u()),
    ((0, 1), (0, 2), (1, 3), (2, 4)): lambda j: (j.z * j.au() ** 2).sum(1),
    ((0, 1), (0, 2), (0, 3), (1, 4)): lambda j: (j.z * j.az(1) ** 2 * j.au()).sum(1),
    # cycles
    ((0, 1), (0, 2), (1, 2)): _triangle,
    ((0, 1), (0, 2), (0, 2), (1, 2)): _triangle_double,
    ((0, 1), (0, 2), (0, 3), (1, 2)): _paw,
    ((0, 1), (0, 2), (1, 3), (2, 3)): _c4,
}
_CONNECTED = {canonical(k): v for k, v in _CONNECTED.items()}


def _plan() -> list[list[tuple[tuple[int, int], ...]]]:
    """Per EFP of EFP_GRAPHS: the canonical forms of its connected components."""
    plan = []
    for g in EFP_GRAPHS:
        comps = [canonical(c) for c in components(g)]
        missing = [c for c in comps if c not in _CONNECTED]
        if missing:
            raise AssertionError(f"no closed form for connected graph(s) {missing}")
        plan.append(comps)
    return plan


_PLAN = _plan()


def efps_padded(z: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """The 36 EFPs (n_jets, 36) of padded jets: weights z (zero past the end), eta, phi (rad).
    theta_ij = sqrt(deta^2 + dphi^2), dphi wrapped to [-pi, pi] (phi in [-pi, pi))."""
    deta = eta[:, :, None] - eta[:, None, :]
    dphi = _wrap_near(phi[:, :, None] - phi[:, None, :])
    j = _Jet(z, np.sqrt(deta * deta + dphi * dphi))
    values = {c: _CONNECTED[c](j) for c in _CONNECTED}
    out = np.empty((len(z), N_EFPS))
    for k, comps in enumerate(_PLAN):
        v = values[comps[0]].copy()
        for c in comps[1:]:
            v *= values[c]
        out[:, k] = v
    return out


def efp_features(jets: ak.Array, workers: int | None = None) -> np.ndarray:
    """The 36 d <= 4 EFPs (n_jets, 36) of jets (part_pt GeV, part_eta_rel, part_phi_rel) with
    z_i = pT_i / pT_jet (module doc). Empty jets (and jets of zero pT) get NaN. Jets are grouped by
    multiplicity into memory-bounded chunks; `workers` threads share them (default min(2, cpus))."""
    pt, eta, phi, mask = padded_constituents(jets)
    num = mask.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(mask, pt / jet_pt(jets)[:, None], 0.0)
    out = np.full((len(num), N_EFPS), np.nan)
    chunks = _size_chunks(num, lambda w: 4 * w * w)

    def run(idx: np.ndarray) -> None:
        w = min(pt.shape[1], max(1, int(num[idx].max())))
        out[idx] = efps_padded(z[idx, :w], eta[idx, :w], phi[idx, :w])

    workers = workers or min(2, os.cpu_count() or 1)
    if workers > 1 and len(chunks) > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, chunks))
    else:
        for c in chunks:
            run(c)
    out[num == 0] = np.nan
    out[~np.isfinite(out).all(1)] = np.nan
    return out
