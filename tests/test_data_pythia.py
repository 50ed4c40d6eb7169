"""Real Pythia 8 + fastjet generation: jets in the window, constituents sorted and capped,
relative coordinates consistent with the stored jet kinematics, determinism in the seed."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.data.jets import constituent_jet_kinematics, read_jets
from scaling_sweeper.data.pythia import (
    PYTHIA_MAX_SEED,
    PythiaConfig,
    chunk_quotas,
    chunk_seed,
    generate_chunk,
    generate_jets,
)


def test_generated_jets_pass_the_selection(real_jets_dir):
    jets = ak.concatenate([read_jets(real_jets_dir / f"{s}.parquet") for s in ("train", "val", "test")])
    assert len(jets) == 3000
    pt = ak.to_numpy(jets.jet_pt)
    assert pt.min() >= 500.0 and pt.max() <= 650.0
    assert np.abs(ak.to_numpy(jets.jet_eta)).max() < 2.5
    n = ak.to_numpy(ak.num(jets.part_pt))
    assert n.min() >= 1 and n.max() <= 128
    assert 20 < n.mean() < 128  # QCD jets at 500-650 GeV carry tens of particles
    assert ak.all(jets.part_pt[:, 1:] <= jets.part_pt[:, :-1])  # sorted by pt, descending
    phi = ak.to_numpy(ak.flatten(jets.part_phi_rel))
    assert phi.min() >= -np.pi and phi.max() < np.pi
    # anti-kT R=0.8: nearly all constituents sit within dR < 0.8 of the axis (eta vs rapidity)
    dr = np.hypot(ak.to_numpy(ak.flatten(jets.part_eta_rel)), phi)
    assert np.mean(dr < 0.85) > 0.97
    # constituents sum back to the clustered jet (pt exactly; jets cut at 128 left out)
    kin = constituent_jet_kinematics(jets)
    full = n < 128
    np.testing.assert_allclose(kin["pt"][full], pt[full], rtol=2e-3)
    mass = ak.to_numpy(jets.jet_mass)
    # treating hadrons as massless lowers the summed mass by a few percent (pions, kaons, protons)
    ratio = kin["mass"][full] / mass[full]
    assert 0.8 < np.median(ratio) < 1.0
    assert 30 < np.median(mass) < 150  # QCD jet mass at ~550 GeV, R=0.8


def test_generation_is_deterministic_and_independent_of_workers():
    cfg = PythiaConfig()
    a = generate_jets(30, seed=7, workers=2, cfg=cfg, chunk_jets=12, progress=False)
    # the same jets chunk by chunk in this process from the derived seeds and quotas
    b = ak.concatenate([generate_chunk(cfg, k, chunk_seed(7, i))[0] for i, k in enumerate(chunk_quotas(30, 12))])
    assert ak.to_list(a) == ak.to_list(b)
    c = generate_jets(15, seed=8, workers=1, cfg=cfg, chunk_jets=12, progress=False)
    assert not np.array_equal(ak.to_numpy(c.jet_pt), ak.to_numpy(a.jet_pt)[:15])


def test_chunk_seeds_and_quotas():
    s = [chunk_seed(0, i) for i in range(8)]
    assert len(set(s)) == 8 and all(1 <= x <= PYTHIA_MAX_SEED for x in s)
    assert [chunk_seed(1, i) for i in range(8)] != s
    # independent reference: child i of the master SeedSequence, whatever the number of chunks
    kids = np.random.SeedSequence(0).spawn(20)
    assert s == [int(k.generate_state(1, np.uint32)[0]) % (PYTHIA_MAX_SEED - 1) + 1 for k in kids[:8]]
    assert chunk_quotas(10, 4) == [4, 4, 2] and sum(chunk_quotas(20000, 7)) == 20000
    with pytest.raises(ConfigError, match="chunk_jets"):
        chunk_quotas(10, 0)


def test_bad_generation_settings_fail_before_compute():
    with pytest.raises(ConfigError, match="pt_min"):
        generate_jets(10, cfg=PythiaConfig(pt_min=700, pt_max=650))
    with pytest.raises(ConfigError, match="workers"):
        generate_jets(10, workers=0)
