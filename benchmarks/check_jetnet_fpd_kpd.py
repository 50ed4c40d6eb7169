"""Cross-check of evaluate.fpd_kpd against JetNet's own `jetnet.evaluation.fpd` / `kpd` (prints
both; not a test, since JetNet cannot be installed beside numpy 2: it needs energyflow, whose
`wasserstein` dependency pins numpy < 2).

Step 1, in this project's environment: EFPs of toy jets (a real sample, a floor sample and a wider
"generated" one) and our FPD/KPD of them:
    .venv/bin/python benchmarks/check_jetnet_fpd_kpd.py ours --out /tmp/jetnet_check.npz
Step 2, in a numpy < 2 environment with numba and scipy, JetNet's gen_metrics.py (a checkout of
github.com/jet-net/JetNet) on the same features; torch and the dataset classes it imports but fpd/kpd
do not use are stubbed:
    python3 -m venv /tmp/efvenv && /tmp/efvenv/bin/pip install "numpy<2" numba scipy energyflow
    /tmp/efvenv/bin/python benchmarks/check_jetnet_fpd_kpd.py jetnet --out /tmp/jetnet_check.npz \\
        --gen-metrics JetNet/jetnet/evaluation/gen_metrics.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np

SETTINGS = {"min_samples": 2000, "max_samples": 5000, "num_batches": 5, "num_points": 6, "seed": 7}
KPD_SETTINGS = {"num_batches": 6, "batch_size": 1500, "seed": 7}


def ours(out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from scaling_sweeper.evaluate.efp import efps_padded
    from scaling_sweeper.evaluate.fpd_kpd import fpd, kpd

    rng = np.random.default_rng(1)

    def jets(n, width=0.25, m_mean=30):
        mult = rng.poisson(m_mean, n).clip(2, 60)
        live = np.arange(60) < mult[:, None]
        pt = np.where(live, rng.exponential(1.0, (n, 60)), 0.0)
        pt /= pt.sum(1, keepdims=True)
        return efps_padded(pt, rng.normal(0, width, (n, 60)), rng.normal(0, width, (n, 60)))

    samples = {"real": jets(6000), "floor": jets(6000), "gen": jets(6000, width=0.27, m_mean=32)}
    result = {}
    for name in ("gen", "floor"):
        f = fpd(samples["real"], samples[name], SETTINGS["min_samples"], SETTINGS["max_samples"],
                SETTINGS["num_batches"], SETTINGS["num_points"], seed=SETTINGS["seed"])
        k = kpd(samples["real"], samples[name], **KPD_SETTINGS)
        result[name] = {"fpd": f.value, "fpd_fit_err": f.fit_err, "kpd": k.value, "kpd_err": k.err}
    np.savez(out, **samples, ours=np.array(json.dumps(result)))
    print(json.dumps(result, indent=1))


def jetnet(out: Path, gen_metrics: Path) -> None:
    torch = types.ModuleType("torch")
    torch.Tensor = type("Tensor", (), {})
    data = types.ModuleType("torch.utils.data")
    data.DataLoader = object
    torch.utils = types.ModuleType("torch.utils")
    torch.utils.data = data
    pkg = types.ModuleType("jetnet")
    pkg.utils = types.ModuleType("jetnet.utils")
    datasets = types.ModuleType("jetnet.datasets")
    datasets.JetNet = object
    sys.modules.update({"torch": torch, "torch.utils": torch.utils, "torch.utils.data": data, "jetnet": pkg,
                        "jetnet.utils": pkg.utils, "jetnet.datasets": datasets})
    spec = importlib.util.spec_from_file_location("gen_metrics", gen_metrics)
    gm = importlib.util.module_from_spec(spec)
    sys.modules["gen_metrics"] = gm  # it looks itself up there
    spec.loader.exec_module(gm)
    z = np.load(out)
    mine = json.loads(str(z["ours"]))
    print(f"{'':<8}{'':<12}{'ours':>24}{'JetNet':>24}{'rel. diff':>12}")
    for name in ("gen", "floor"):
        f, fe = gm.fpd(z["real"], z[name], **SETTINGS)
        k, ke = gm.kpd(z["real"], z[name], **KPD_SETTINGS)
        for key, theirs in (("fpd", f), ("fpd_fit_err", fe), ("kpd", k), ("kpd_err", ke)):
            m = mine[name][key]
            print(f"{name:<8}{key:<12}{m:>24.15g}{float(theirs):>24.15g}{abs(m - theirs) / abs(theirs):>12.2g}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["ours", "jetnet"])
    ap.add_argument("--out", type=Path, default=Path("/tmp/jetnet_check.npz"))
    ap.add_argument("--gen-metrics", type=Path, help="JetNet's jetnet/evaluation/gen_metrics.py (step jetnet)")
    args = ap.parse_args(argv)
    if args.step == "ours":
        ours(args.out)
    else:
        jetnet(args.out, args.gen_metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
