"""The 36 d <= 4 energy-flow polynomials: every graph against a brute-force sum of its definition,
hand-derived two- and three-particle closed forms, energyflow's own values, and the jet interface."""

from __future__ import annotations

import string
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from scaling_sweeper.data.jets import make_jets
from scaling_sweeper.evaluate import efp

REFERENCE = Path(__file__).parent / "data" / "efp_energyflow_reference.npz"


def brute_force_efp(edges, z: np.ndarray, theta: np.ndarray) -> float:
    """sum over all vertex assignments of prod z * prod theta (einsum of the definition)."""
    n_vert = 1 + max((v for e in edges for v in e), default=0)
    letters = string.ascii_letters[:n_vert]
    terms = [letters[v] for v in range(n_vert)] + [letters[a] + letters[b] for a, b in edges]
    return float(np.einsum(",".join(terms) + "->", *([z] * n_vert + [theta] * len(edges))))


def theta_of(eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    dphi = np.abs(phi[:, None] - phi[None, :])
    dphi = np.minimum(dphi, 2 * np.pi - dphi)
    return np.sqrt((eta[:, None] - eta[None, :]) ** 2 + dphi**2)


def random_jet(rng, m):
    return rng.exponential(1.0, m), rng.normal(0, 0.3, m), rng.uniform(-np.pi, np.pi, m)


def test_graph_table_is_the_d_le_4_set():
    assert efp.N_EFPS == 36
    assert len({efp.canonical(g) if len(efp.components(g)) == 1 else g for g in efp.EFP_GRAPHS}) == 36
    # 1 + 1 + 3 + 8 + 23 multigraphs with 0..4 edges
    assert np.bincount([len(g) for g in efp.EFP_GRAPHS]).tolist() == [1, 1, 3, 8, 23]
    assert sum(len(efp.components(g)) == 1 for g in efp.EFP_GRAPHS) == 21  # connected (prime) ones


@pytest.mark.parametrize("m", [1, 2, 3, 7, 12])
def test_every_graph_matches_brute_force(m):
    rng = np.random.default_rng(m)
    z, eta, phi = random_jet(rng, m)
    theta = theta_of(eta, phi)
    pad = 16  # padding with z = 0 must not contribute
    zp, ep, pp = (np.concatenate([a, np.zeros(pad - m)])[None] for a in (z, eta, phi))
    got = efp.efps_padded(zp, ep, pp)[0]
    want = np.array([brute_force_efp(g, z, theta) for g in efp.EFP_GRAPHS])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)


def test_two_and_three_particle_closed_forms():
    z1, z2, th = 0.7, 0.3, 0.4
    v = efp.efps_padded(np.array([[z1, z2]]), np.array([[0.0, th]]), np.array([[0.0, 0.0]]))[0]
    col = {g: v[k] for k, g in enumerate(efp.EFP_GRAPHS)}
    assert col[()] == pytest.approx(z1 + z2)
    for d in range(1, 5):  # d-fold edge between two vertices: 2 z1 z2 theta^d
        assert col[((0, 1),) * d] == pytest.approx(2 * z1 * z2 * th**d)
    assert col[((0, 1), (0, 2))] == pytest.approx(z1 * z2 * th**2 * (z1 + z2))  # path of 3 vertices
    assert col[((0, 1), (2, 3))] == pytest.approx((2 * z1 * z2 * th) ** 2)  # disconnected: product
    assert col[((0, 1), (0, 2), (1, 2))] == 0.0  # a triangle needs three distinct particles
    # three particles on an equilateral triangle of side s: triangle EFP = 6 z1 z2 z3 s^3
    s = 0.2
    eta = np.array([[0.0, s, s / 2]])
    phi = np.array([[0.0, 0.0, s * np.sqrt(3) / 2]])
    zz = np.array([[0.5, 0.3, 0.2]])
    tri = efp.efps_padded(zz, eta, phi)[0][efp.EFP_GRAPHS.index(((0, 1), (0, 2), (1, 2)))]
    assert tri == pytest.approx(6 * 0.5 * 0.3 * 0.2 * s**3)


def test_matches_energyflow_values():
    """energyflow 1.4.0's EFPSet(("d<=", 4), measure="hadr", beta=1, normed=None) on 120 random jets
    (made by tests/data/make_efp_reference.py; a quarter of them straddle phi = +-pi)."""
    ref = np.load(REFERENCE)
    assert [str(list(g)) for g in efp.EFP_GRAPHS] == [str(g) for g in ref["graphs"]]
    got = efp.efps_padded(ref["pt"], ref["eta"], ref["phi"])
    np.testing.assert_allclose(got, ref["efps"], rtol=1e-11, atol=0)


def _jets(rng, n):
    counts = rng.integers(1, 40, n)
    tot = counts.sum()
    return make_jets(counts, rng.exponential(20.0, tot), rng.normal(0, 0.2, tot), rng.normal(0, 0.2, tot),
                     np.full(n, 500.0), np.zeros(n), np.zeros(n), np.full(n, 80.0))


def test_efp_features_use_relative_pt_and_are_frame_invariant():
    from scaling_sweeper.evaluate.observables import jet_pt, padded_constituents

    jets = _jets(np.random.default_rng(0), 60)
    f = efp.efp_features(jets, workers=2)
    assert f.shape == (60, 36) and np.isfinite(f).all()
    pt, eta, phi, mask = padded_constituents(jets)
    z = np.where(mask, pt / jet_pt(jets)[:, None], 0.0)
    k = 5
    np.testing.assert_allclose(f[k], [brute_force_efp(g, z[k][mask[k]], theta_of(eta[k][mask[k]], phi[k][mask[k]]))
                                      for g in efp.EFP_GRAPHS], rtol=1e-10)
    # z = pT / pT_jet: scaling every pT leaves the EFPs unchanged; so does a rotation in phi
    scaled = ak.with_field(jets, jets["part_pt"] * 3.0, "part_pt")
    np.testing.assert_allclose(efp.efp_features(scaled, workers=1), f, rtol=1e-5)
    turned = ak.with_field(jets, (jets["part_phi_rel"] + 1.0 + np.pi) % (2 * np.pi) - np.pi, "part_phi_rel")
    np.testing.assert_allclose(efp.efp_features(turned, workers=1), f, rtol=1e-4)


def test_empty_jets_get_nan_rows():
    jets = _jets(np.random.default_rng(1), 10)
    flat = {k: ak.to_numpy(ak.flatten(jets[k])) for k in ("part_pt", "part_eta_rel", "part_phi_rel")}
    counts = ak.to_numpy(ak.num(jets["part_pt"], axis=1)).copy()
    counts = np.insert(counts, 3, 0)  # an empty jet at index 3
    with_empty = make_jets(counts, flat["part_pt"], flat["part_eta_rel"], flat["part_phi_rel"],
                           np.full(11, 500.0), np.zeros(11), np.zeros(11), np.full(11, 80.0))
    f = efp.efp_features(with_empty, workers=1)
    assert np.isnan(f[3]).all() and np.isfinite(np.delete(f, 3, 0)).all()
    np.testing.assert_allclose(np.delete(f, 3, 0), efp.efp_features(jets, workers=1), rtol=1e-12)
