"""Data making on a real 2-node loopback Ray cluster vs one process, and resume after a kill:
the same small Pythia dataset (a few hundred jets, chunks of 40) must give identical chunk parts,
token shards (sha256) and trial results whoever made it, and a killed job must only make the
chunks it had not finished."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling_sweeper.data.chunks import marker_path
from scaling_sweeper.data.dataset import TokenizeConfig, make_dataset
from scaling_sweeper.data.shards import ShardIndex
from scaling_sweeper.train.config import TrainConfig
from scaling_sweeper.train.single import run_trial
from tests.test_sweep_e2e import local_cluster  # noqa: F401 (the module-scoped loopback cluster)

PY = sys.executable
REPO = Path(__file__).resolve().parents[1]
ARGS = {"n_jets": 160, "seed": 3, "chunk_jets": 40}  # 4 chunks
N_CHUNKS = 4


def _cli_args(out: Path) -> list[str]:
    return [PY, "-m", "scaling_sweeper.cli", "data", "make", "--out", str(out), "--n-jets", str(ARGS["n_jets"]),
            "--seed", str(ARGS["seed"]), "--chunk-jets", str(ARGS["chunk_jets"]), "--bins", "8", "--no-progress"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("one") / "ds", workers=1, progress=False,
                        tokenizer=TokenizeConfig(n_bins=(8, 8, 8)), **ARGS)


def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def _same_data(a: Path, b: Path) -> None:
    assert _manifest(a)["chunk_sha256"] == _manifest(b)["chunk_sha256"]
    ia, ib = ShardIndex.load(a / "tokens"), ShardIndex.load(b / "tokens")
    assert ia.splits == ib.splits  # per split and per shard: rows, bytes, sha256
    for s in ("train", "val", "test"):
        for fa, fb in zip(ia.shard_files(s), ib.shard_files(s)):
            assert fa.path.read_bytes() == fb.path.read_bytes()
    assert (a / "tokens" / "tokenizer.json").read_bytes() == (b / "tokens" / "tokenizer.json").read_bytes()


def _trial(tokens: Path, run: Path) -> dict:
    cfg = TrainConfig(size="Pico", data=str(tokens), tokens=64 * 130, steps=4, batch_size=8, warmup_steps=1,
                      eval_every=2, eval_batches=1, log_every=1, ckpt_every=4, seed=1, threads=1)
    return run_trial(cfg, run)


def test_cluster_and_one_process_make_identical_data_and_trials(local_cluster, one_process, tmp_path,  # noqa: F811
                                                                one_torch_thread):
    out = tmp_path / "ray"
    r = subprocess.run([*_cli_args(out), "--address", local_cluster["RAY_ADDRESS"]], cwd=REPO,
                       capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                        "RAY_USAGE_STATS_ENABLED": "0"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"in {N_CHUNKS} chunks ({N_CHUNKS} made now)" in r.stdout
    markers = [json.loads(marker_path(out, i).read_text()) for i in range(N_CHUNKS)]
    nodes = {m["ran_on"].get("ray_node") for m in markers}
    assert None not in nodes and len(nodes) == 2, nodes  # Ray tasks, spread over both nodes
    _same_data(one_process, out)
    a = _trial(one_process / "tokens", tmp_path / "run_one")
    b = _trial(out / "tokens", tmp_path / "run_ray")
    assert a["status"] == b["status"] == "done"
    for k in ("final_val_loss", "best_val_loss", "D", "tokens_seen", "C_exact"):
        assert a[k] == b[k], k


def test_killed_job_remakes_only_missing_chunks(one_process, tmp_path):
    out = tmp_path / "killed"
    p = subprocess.Popen(_cli_args(out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while not marker_path(out, 0).exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.02)
    finally:
        p.kill()
        p.wait()
    done = [i for i in range(N_CHUNKS) if marker_path(out, i).exists()]
    assert 1 <= len(done) < N_CHUNKS and not (out / "manifest.json").exists(), done
    before = {i: (marker_path(out, i).stat().st_mtime_ns, marker_path(out, i).read_text()) for i in done}
    r = subprocess.run(_cli_args(out), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"({N_CHUNKS - len(done)} made now)" in r.stdout
    assert {i: (marker_path(out, i).stat().st_mtime_ns, marker_path(out, i).read_text()) for i in done} == before
    _same_data(one_process, out)
