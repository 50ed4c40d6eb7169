"""Tokenizers side by side on the same jets: per-feature round-trip error, jet pT/mass change,
codebook use and round-trip SWD vs floor, from each tokens folder's tokenization_report.json
(prints the ratios to the first folder; not a test).

    .venv/bin/python benchmarks/bench_tokenizers.py data/demo/tokens data/vq_demo/tokens_vq

Every folder must have been tokenized from the same jets (the report's split and jet count are
printed so a mismatch shows). With --refit-jets DIR --n-jets N the tokenizers are instead fitted
here on the first N training jets of DIR (binned default and vq CPU default) and the fit time is
printed, to measure and extrapolate on a small set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FEATURES = ("log_pt", "eta_rel", "phi_rel")


def _row(name: str, rep: dict) -> dict:
    rt = rep.get("roundtrip_swd") or {}
    cb = rep.get("codebook") or {}
    return {
        "name": name, "kind": rep.get("kind", "binned"), "jets": f"{rep.get('split', '?')}:{rep['n_jets']}",
        **{f"mae_{f}": rep["feature_mae"][f] for f in FEATURES},
        "jet_pt_abs": rep["jet_pt_rel"]["mean_abs"], "jet_mass_abs": rep["jet_mass_rel"]["mean_abs"],
        "codes_used": cb.get("codes_used_frac"), "perplexity": cb.get("perplexity"),
        "swd_rt": rt.get("swd_roundtrip"), "swd_rt_err": rt.get("swd_roundtrip_err"),
        "swd_floor": rt.get("swd_floor"), "swd_floor_err": rt.get("swd_floor_err"),
        "within": rt.get("within_floor"),
    }


def _print(rows: list[dict]) -> None:
    ref = rows[0]
    keys = [f"mae_{f}" for f in FEATURES] + ["jet_pt_abs", "jet_mass_abs"]
    print(f"{'tokens':<34}{'kind':<8}{'jets':<12}" + "".join(f"{k:>22}" for k in keys)
          + f"{'codes used':>12}{'perplexity':>12}{'round-trip SWD':>20}{'floor':>20}")
    for r in rows:
        cells = "".join(f"{r[k]:>12.5f} ({r[k] / ref[k]:>5.2f}x)" if ref[k] else f"{r[k]:>22.5f}" for k in keys)
        used = "" if r["codes_used"] is None else f"{r['codes_used']:>12.3f}{r['perplexity']:>12.0f}"
        swd = ("" if r["swd_rt"] is None else
               f"{r['swd_rt']:>11.4f} +- {r['swd_rt_err']:.4f}{r['swd_floor']:>11.4f} +- {r['swd_floor_err']:.4f}"
               f"  {'within' if r['within'] else 'ABOVE'}")
        print(f"{r['name'][-33:]:<34}{r['kind']:<8}{r['jets']:<12}{cells}{used}{swd}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tokens", nargs="*", type=Path, help="tokens folders with tokenization_report.json")
    ap.add_argument("--refit-jets", type=Path, default=None, help="jets folder: fit both kinds here instead")
    ap.add_argument("--n-jets", type=int, default=2000, help="training jets for --refit-jets")
    ap.add_argument("--vq", action="append", default=[], metavar="KEY=VALUE", help="VQConfig overrides")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.refit_jets is None:
        rows = [_row(str(p), json.loads((p / "tokenization_report.json").read_text())) for p in args.tokens]
        _print(rows)
        return 0
    import torch
    import yaml

    from scaling_sweeper.data.jets import read_jets
    from scaling_sweeper.data.tokenizer import BinnedTokenizer, tokenization_report
    from scaling_sweeper.data.vq_tokenizer import VQConfig, VQTokenizer
    from scaling_sweeper.evaluate.run import tokenizer_roundtrip_report

    torch.set_num_threads(args.threads)
    train = read_jets(args.refit_jets / "train.parquet")[: args.n_jets]
    test = read_jets(args.refit_jets / "test.parquet")
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.vq)}
    rows = []
    for name, tok in (("binned (default)", BinnedTokenizer()), ("vq", VQTokenizer(VQConfig(**overrides)))):
        t0 = time.process_time()
        tok.fit(train, seed=0)
        fit_s = time.process_time() - t0
        t0 = time.process_time()
        rep = {"split": "test", **tokenization_report(tok, test), "roundtrip_swd": tokenizer_roundtrip_report(tok, test)}
        rows.append(_row(f"{name} fit {fit_s:.0f}s cpu", rep))
        print(f"{name}: fit {fit_s:.1f} s CPU on {len(train)} jets, report {time.process_time() - t0:.1f} s CPU",
              flush=True)
    _print(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
