"""Jet observables: hand-computed jets, fastjet's own values, and the two exclusive-kT codes."""

from __future__ import annotations

import warnings

import awkward as ak
import numpy as np
import pytest

from scaling_sweeper.evaluate import observables as O


def make_jets(pts, etas, phis) -> ak.Array:
    """Jets from lists of per-jet constituent lists (a test helper)."""
    return ak.zip({"part_pt": ak.Array(pts), "part_eta_rel": ak.Array(etas), "part_phi_rel": ak.Array(phis)},
                  depth_limit=1)


@pytest.fixture(scope="module")
def pythia_jets(real_jets_dir):
    from scaling_sweeper.data.jets import read_jets

    return read_jets(real_jets_dir / "test.parquet")[:150]


def test_two_massless_particles_mass_and_pt_closed_form():
    rng = np.random.default_rng(0)
    pt = rng.uniform(5, 300, size=(20, 2))
    eta = rng.uniform(-0.8, 0.8, size=(20, 2))
    phi = rng.uniform(-3.0, 3.0, size=(20, 2))  # wide angles: exercises the phi wrap too
    jets = make_jets(pt.tolist(), eta.tolist(), phi.tolist())
    m2 = 2 * pt[:, 0] * pt[:, 1] * (np.cosh(eta[:, 0] - eta[:, 1]) - np.cos(phi[:, 0] - phi[:, 1]))
    np.testing.assert_allclose(O.jet_mass(jets), np.sqrt(m2), rtol=1e-10)
    ptj = np.abs(pt[:, 0] * np.exp(1j * phi[:, 0]) + pt[:, 1] * np.exp(1j * phi[:, 1]))
    np.testing.assert_allclose(O.jet_pt(jets), ptj, rtol=1e-10)
    np.testing.assert_array_equal(O.n_constituents(jets), 2)


def test_one_prong_jet_has_tau1_and_tau21_near_zero():
    # a hard core with tiny collinear splittings: all radiation sits on the jet axis
    rng = np.random.default_rng(1)
    pts = [[400.0] + list(rng.uniform(1, 20, 9))]
    etas = [[0.0] + list(rng.normal(0, 1e-4, 9))]
    phis = [[0.0] + list(rng.normal(0, 1e-4, 9))]
    jets = make_jets(pts, etas, phis)
    tau = O.nsubjettiness(jets, 3)
    assert tau[0, 0] < 1e-3
    assert O.tau21(jets)[0] < 1.0  # defined, finite
    # exactly collinear: tau1 = tau2 = 0 and the ratio is defined as 0, not NaN
    exact = make_jets([[100.0, 50.0, 10.0]], [[0.1, 0.1, 0.1]], [[0.2, 0.2, 0.2]])
    np.testing.assert_allclose(O.nsubjettiness(exact, 3)[0], 0.0, atol=1e-12)
    assert O.tau21(exact)[0] == 0.0


def test_two_prong_jet_tau21_near_zero_and_tau1_by_hand():
    # two equal-pt particles at eta = +-a, phi = 0: the jet axis is at y = 0, tau1 = a / R0
    a = 0.3
    jets = make_jets([[200.0, 200.0]], [[a, -a]], [[0.0, 0.0]])
    tau = O.nsubjettiness(jets, 2)
    assert tau[0, 0] == pytest.approx(a / 0.8, rel=1e-12)
    assert tau[0, 1] == 0.0  # two particles, two axes
    # two tight prongs with soft spread: tau2 << tau1
    rng = np.random.default_rng(2)
    n = 12
    eta = np.concatenate([rng.normal(a, 0.01, n), rng.normal(-a, 0.01, n)])
    phi = rng.normal(0, 0.01, 2 * n)
    jets = make_jets([rng.uniform(10, 30, 2 * n).tolist()], [eta.tolist()], [phi.tolist()])
    assert O.tau21(jets)[0] < 0.1
    assert O.tau32(jets)[0] > 0.3  # the third axis buys little


def _brute_force_tau(pt, eta, phi, n_axes, r0=0.8):
    """tau_N from the definition, per jet in plain Python, axes from fastjet's single-jet API."""
    import fastjet

    if len(pt) <= n_axes:
        return 0.0
    pj = [fastjet.PseudoJet(p * np.cos(f), p * np.sin(f), p * np.sinh(e), p * np.cosh(e))
          for p, e, f in zip(pt, eta, phi)]
    cs = fastjet.ClusterSequence(pj, fastjet.JetDefinition(fastjet.kt_algorithm, 1000.0))
    axes = cs.exclusive_jets(n_axes)
    total = 0.0
    for p, e, f in zip(pt, eta, phi):
        dr = []
        for ax in axes:
            dphi = (f - ax.phi_std() + np.pi) % (2 * np.pi) - np.pi
            dr.append(np.hypot(e - ax.rap(), dphi))
        total += p * min(dr)
    return total / (sum(pt) * r0)


def test_against_fastjet_on_pythia_jets(pythia_jets):
    import fastjet

    jets = pythia_jets
    obs = O.compute_observables(jets)
    for i in range(0, len(jets), 10):
        pt, eta, phi = (np.asarray(jets[i][f], dtype=np.float64)
                        for f in ("part_pt", "part_eta_rel", "part_phi_rel"))
        total = fastjet.PseudoJet(0.0, 0.0, 0.0, 0.0)
        for p, e, f in zip(pt, eta, phi):
            total = total + fastjet.PseudoJet(p * np.cos(f), p * np.sin(f), p * np.sinh(e), p * np.cosh(e))
        assert obs["jet_pt"][i] == pytest.approx(total.pt(), rel=1e-9)
        assert obs["jet_mass"][i] == pytest.approx(total.m(), rel=1e-6)
        for n in (1, 2, 3):
            assert obs[f"tau{n}"][i] == pytest.approx(_brute_force_tau(pt, eta, phi, n), rel=1e-8, abs=1e-12)
    # sanity: close to the dataset's jet_pt (that one keeps hadron masses, so not exact); a jet
    # truncated to its 128 hardest constituents lost the rest of its pT, so it is not compared
    kept = ak.to_numpy(ak.num(jets.part_pt)) < 128
    assert kept.sum() > 0.9 * len(jets)
    np.testing.assert_allclose(obs["jet_pt"][kept], ak.to_numpy(jets.jet_pt)[kept], rtol=2e-2)
    # D2 against fastjet contrib's EnergyCorrelatorD2 (beta = 1) on the whole jet
    pt, eta, phi = (ak.values_astype(jets[f], np.float64) for f in ("part_pt", "part_eta_rel", "part_phi_rel"))
    p4 = ak.zip({"px": pt * np.cos(phi), "py": pt * np.sin(phi), "pz": pt * np.sinh(eta), "E": pt * np.cosh(eta)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cs = fastjet.ClusterSequence(p4, fastjet.JetDefinition(fastjet.kt_algorithm, 1000.0))
        d2_fj = np.asarray(cs.exclusive_jets_energy_correlator(njets=1, beta=1, npoint=2, func="D2"))
    np.testing.assert_allclose(obs["d2"], d2_fj, rtol=1e-6)


def test_own_exclusive_kt_matches_fastjet(pythia_jets):
    """The vectorised numpy exclusive-kT and fastjet's C++ give the same axes, hence taus."""
    jets = pythia_jets[:60]
    a = O.nsubjettiness(jets, 3, axes="fastjet")
    b = O.nsubjettiness(jets, 3, axes="numpy")
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_empty_and_nan_jets_are_flagged_not_crashing():
    jets = make_jets([[], [100.0, 50.0], [100.0, float("nan")], [80.0]],
                     [[], [0.1, -0.1], [0.0, 0.1], [0.0]], [[], [0.0, 0.2], [0.0, 0.1], [0.0]])
    obs = O.compute_observables(jets)
    assert all(len(v) == 4 for v in obs.values())
    assert obs["n_constituents"].tolist() == [0, 2, 2, 1]
    assert np.isnan(obs["jet_pt"][0]) and np.isnan(obs["tau21"][0])
    assert obs["tau21"][3] == 0.0 and obs["jet_mass"][3] == 0.0  # one massless particle
    bad = O.invalid_mask({k: obs[k] for k in O.SWD_OBSERVABLES})
    assert bad.tolist() == [True, False, True, False]


def test_unknown_observable_is_a_config_error():
    from scaling_sweeper.base.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown observable"):
        O.compute_observables(make_jets([[1.0]], [[0.0]], [[0.0]]), ["jet_ptt"])


def test_fastjet_and_numpy_taus_agree_for_every_multiplicity():
    """Jets of 1..7 constituents exercise the 'constituents are the axes' and reuse paths."""
    rng = np.random.default_rng(3)
    counts = np.repeat(np.arange(1, 8), 4)
    jets = make_jets([rng.exponential(30, k).tolist() for k in counts],
                     [rng.normal(0, 0.3, k).tolist() for k in counts],
                     [rng.normal(0, 0.3, k).tolist() for k in counts])
    a = O.nsubjettiness(jets, 4, axes="fastjet")
    b = O.nsubjettiness(jets, 4, axes="numpy")
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    for n in range(1, 5):
        assert (a[counts <= n, n - 1] < 1e-12).all() and (a[counts > n, n - 1] > 1e-6).all()
