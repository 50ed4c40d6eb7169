"""Make tests/data/efp_energyflow_reference.npz: the 36 d <= 4 EFPs of 120 random jets computed by
energyflow itself, as JetNet computes them (`jetnet.utils.efps` with efpset_args [("d<=", 4)]:
EFPSet(measure="hadr", beta=1, normed=None, coords="ptyphim")).

energyflow needs numpy < 2 (through `wasserstein`), so this runs in a separate environment:
    python3 -m venv /tmp/efvenv && /tmp/efvenv/bin/pip install "numpy<2" energyflow==1.4.0
    /tmp/efvenv/bin/python tests/data/make_efp_reference.py
tests/test_eval_efp.py compares scaling_sweeper.evaluate.efp with the stored values.
"""

from pathlib import Path

import energyflow as ef
import numpy as np

rng = np.random.default_rng(2023)
n_jets, max_n = 120, 70
mult = np.concatenate([[1, 2, 3, 4, 5], rng.integers(1, max_n + 1, n_jets - 5)])
pt = np.zeros((n_jets, max_n))
eta = np.zeros((n_jets, max_n))
phi = np.zeros((n_jets, max_n))
for i, m in enumerate(mult):
    p = np.sort(rng.exponential(1.0, m))[::-1]
    pt[i, :m] = p / p.sum() * rng.uniform(0.9, 1.1)  # relative pT, sums near 1 as in JetNet
    eta[i, :m] = rng.normal(0.0, 0.25, m)
    centre = np.pi if i % 4 == 0 else 0.0  # every fourth jet straddles phi = +-pi (wrap-around)
    phi[i, :m] = (centre + rng.normal(0.0, 0.25, m) + np.pi) % (2 * np.pi) - np.pi

efpset = ef.EFPSet(("d<=", 4), measure="hadr", beta=1, normed=None, coords="ptyphim")
jets = np.stack([pt, eta, phi], axis=2)  # energyflow's (pt, y, phi); zero-pt padding contributes 0
values = efpset.batch_compute(jets, 1)
graphs = np.array([str([tuple(map(int, e)) for e in g]) for g in efpset.graphs()])
out = Path(__file__).with_name("efp_energyflow_reference.npz")
np.savez_compressed(out, pt=pt, eta=eta, phi=phi, efps=values, graphs=graphs,
                    energyflow_version=np.array(ef.__version__))
print(f"wrote {out}: {values.shape} EFPs (energyflow {ef.__version__})")
