"""Teacher data (`sweeper data make --source teacher`, evaluate/teacher.py): the recorded entropy
against independent computations (exact enumeration of every row of a toy teacher, the teacher's
-log p on fresh samples, the project's validation-loss code on the teacher's own rows), sampling
that follows the model's probabilities, chunked multi-worker and resumed makes identical to one
uninterrupted worker, bad teachers refused before any compute, the known entropy in a student's
results row and trials table, and the CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from scaling_sweeper.base.errors import CheckpointError, ConfigError, DataError
from scaling_sweeper.data.known_entropy import VAL_NLL_FILE, read_known_entropy
from scaling_sweeper.data.shards import SPLITS, TokenShard
from scaling_sweeper.evaluate import teacher as T
from scaling_sweeper.evaluate.teacher import TeacherDataConfig, make_teacher_dataset, resolve_teacher


# ------------------------------------------------------------------------------ fixtures
def _toy_tokens(root: Path) -> Path:
    """A tokens folder with a 2-token codebook (vocab 5) and rows of 5 (at most 3 constituents)."""
    from scaling_sweeper.data.jets import make_jets
    from scaling_sweeper.data.shards import write_shards
    from scaling_sweeper.data.tokenizer import BinnedTokenizer

    rng = np.random.default_rng(0)
    n = 400
    counts = rng.integers(1, 4, n)
    k = int(counts.sum())
    jets = make_jets(counts, np.exp(rng.normal(2, 1, k)), rng.normal(0, 0.1, k), rng.normal(0, 0.1, k),
                     np.ones(n), np.zeros(n), np.zeros(n), np.ones(n))
    tok = BinnedTokenizer(n_bins=(2, 1, 1), max_constituents=3).fit(jets)
    td = root / "tokens"
    td.mkdir(parents=True)
    path = tok.save(td / "tokenizer.json")
    rows = tok.encode(jets)
    write_shards(td, {"train": rows[:300], "val": rows[300:350], "test": rows[350:]}, vocab_size=tok.vocab_size,
                 pad_token=tok.pad_token, tokenizer_file=path)
    return td


def _train(data: Path, run: Path, steps: int, **kw):
    from scaling_sweeper.train.config import TrainConfig
    from scaling_sweeper.train.single import run_trial

    fields = dict(size="Pico", data=str(data), tokens=300 * 5, steps=steps, batch_size=16, warmup_steps=5,
                  eval_every=steps, eval_batches=2, log_every=steps, ckpt_every=steps, seed=0, threads=1)
    cfg = TrainConfig(**{**fields, **kw})
    row = run_trial(cfg, run)
    assert row["status"] == "done"
    return row


@pytest.fixture(scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def toy_teacher(tmp_path_factory, one_thread) -> Path:
    root = tmp_path_factory.mktemp("toy_teacher")
    _train(_toy_tokens(root), root / "run", 60, lr=1e-2)
    return root / "run"


@pytest.fixture(scope="module")
def toy_data(toy_teacher, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy_data") / "teacher"
    return make_teacher_dataset(out, TeacherDataConfig(teacher=str(toy_teacher), n_jets=20000, chunk_jets=5000,
                                                       seed=3), progress=False)


@pytest.fixture(scope="module")
def real_teacher(tokens_dir, tmp_path_factory, one_thread) -> Path:
    """Pico trained briefly on the real (Pythia) tokens: full vocabulary (8195), rows of 130."""
    run = tmp_path_factory.mktemp("real_teacher") / "pico"
    _train(tokens_dir, run, 60, tokens=200 * 130, lr=2e-2)
    return run


@pytest.fixture(scope="module")
def real_data(real_teacher, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real_data") / "teacher"
    return make_teacher_dataset(out, TeacherDataConfig(teacher=str(real_teacher), n_jets=240, chunk_jets=80),
                                progress=False)


def _block(data: Path) -> dict:
    return json.loads((data / "tokens" / "index.json").read_text())["data_entropy"]


def _all_rows(data: Path) -> np.ndarray:
    return np.concatenate([np.asarray(TokenShard(data / "tokens", s).data) for s in SPLITS])


def _masked_nll(model, rows: np.ndarray, start: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: per row, the summed -log q over its non-pad targets (q: the float64
    softmax without start and pad, by a plain full forward pass) and their number."""
    m = model.double()
    x = torch.from_numpy(rows[:, :-1].astype(np.int64))
    y = torch.from_numpy(rows[:, 1:].astype(np.int64))
    with torch.no_grad():
        logits = m(x)[0].double()
    logits[..., [start, pad]] = -math.inf
    lq = torch.log_softmax(logits, -1).gather(-1, y[..., None])[..., 0]
    keep = y != pad
    return -torch.where(keep, lq, 0.0).sum(1).numpy(), keep.sum(1).numpy()


def _loss(model, rows: np.ndarray, lay) -> float:
    s, n = _masked_nll(model, rows, lay.start_token, lay.pad_token)
    return float(s.sum() / n.sum())


# ------------------------------------------------------------------------------ the entropy
def _enumerate(model, lay) -> tuple[dict[tuple[int, ...], float], float, float]:
    """Every row the toy teacher can produce with its probability (float64, one prefix at a
    time), the row entropy -sum P log P and the expected number of non-pad targets."""
    V = model.config.vocab_size
    allowed = [v for v in range(V) if v not in (lay.start_token, lay.pad_token)]
    live = [((lay.start_token,), 0.0)]
    rows: dict[tuple[int, ...], float] = {}
    H_row = E_len = 0.0
    m = model.double()
    with torch.no_grad():
        for pos in range(1, lay.seq_len):
            logits = m(torch.tensor([p for p, _ in live]))[0][:, -1].double()
            logits[:, [lay.start_token, lay.pad_token]] = -math.inf
            lq = torch.log_softmax(logits, -1).numpy()
            nxt = []
            for (p, lp), row_lq in zip(live, lq):
                for v in allowed:
                    lpv = lp + float(row_lq[v])
                    if v == lay.stop_token or pos == lay.seq_len - 1:
                        rows[p + (v,)] = math.exp(lpv)
                        H_row -= math.exp(lpv) * lpv
                        E_len += math.exp(lpv) * pos
                    else:
                        nxt.append((p + (v,), lpv))
            live = nxt
    return rows, H_row, E_len


def test_entropy_matches_exact_enumeration_and_rows_follow_the_model(toy_teacher, toy_data):
    from scipy.stats import chisquare

    t = resolve_teacher(toy_teacher)
    model = T.load_teacher_model(t.checkpoint, t.sha256)
    probs, H_row, E_len = _enumerate(model, t.layout)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-12)
    H_exact = H_row / E_len
    b = _block(toy_data)
    assert b["n_rows"] == 20000 and b["err"] > 0
    assert abs(b["nats_per_token"] - H_exact) < 3 * b["err"]
    assert abs(b["row_entropy"] - H_row) < 3 * b["row_entropy_err"]
    assert abs(b["mean_targets_per_row"] - E_len) < 0.05
    # the sampled rows follow the model: chi-square of the row counts against the enumerated P
    rows = _all_rows(toy_data)
    pad = t.layout.pad_token
    seen: dict[tuple[int, ...], int] = {}
    for r in rows:
        key = tuple(int(v) for v in r if v != pad)
        seen[key] = seen.get(key, 0) + 1
    assert set(seen) <= set(probs)
    keys = sorted(probs)
    obs = np.array([seen.get(k, 0) for k in keys], float)
    exp = np.array([probs[k] for k in keys]) * len(rows)
    assert chisquare(obs, exp).pvalue > 1e-3
    # per position: the constituent and stop parts add up to the total
    pp = b["per_position"]
    total = sum(c * m for c, m in zip(pp["constituent_count"], pp["constituent"])) + pp["stop_count"] * pp["stop"]
    assert total == pytest.approx(b["nats_per_token"] * b["n_tokens"], rel=1e-12)
    assert sum(pp["constituent_count"]) + pp["stop_count"] == b["n_tokens"]


def test_entropy_matches_fresh_samples_of_the_teacher(real_teacher, real_data):
    """A second, independent sample (another seed, another code path for -log p) agrees."""
    t = resolve_teacher(real_teacher)
    model = T.load_teacher_model(t.checkpoint, t.sha256)
    rows = T.sample_rows(model, 240, seed=12345, layout=t.layout)
    s, n = _masked_nll(model, rows, t.layout.start_token, t.layout.pad_token)
    from scaling_sweeper.train.position_loss import ratio_error

    b = _block(real_data)
    assert abs(s.sum() / n.sum() - b["nats_per_token"]) < 3 * math.hypot(b["err"], ratio_error(s, n))
    assert not np.array_equal(rows, _all_rows(real_data)[:240])
    # and the recorded number is exactly the reference on the recorded rows
    s_all, n_all = _masked_nll(model, _all_rows(real_data), t.layout.start_token, t.layout.pad_token)
    assert b["nats_per_token"] == pytest.approx(s_all.sum() / n_all.sum(), rel=1e-10)
    assert b["n_tokens"] == n_all.sum()


def test_teacher_validation_loss_on_its_own_rows(toy_teacher, toy_data, real_teacher, real_data):
    """The project's validation-loss code (softmax over all tokens, fp32) on the teacher's own
    rows gives H plus the recorded excess (-log of the mass it keeps off start/pad) exactly; that
    excess is small (~2/vocab for this barely trained teacher), so its validation loss on the
    val rows equals H within their errors."""
    from scaling_sweeper.train.checkpoint import load_model
    from scaling_sweeper.train.position_loss import evaluate_positions

    for run, data in ((toy_teacher, toy_data), (real_teacher, real_data)):
        model, _ = load_model(run)
        b = _block(data)
        pad = TokenShard(data / "tokens", "train").index.pad_token
        pos = evaluate_positions(model, _all_rows(data), pad, 256, torch.device("cpu"))
        assert pos.loss == pytest.approx(b["nats_per_token"] + b["teacher_loss_excess"], abs=2e-5)
    b = _block(real_data)
    assert 0 < b["teacher_loss_excess"] < 1e-3
    val = np.asarray(TokenShard(real_data / "tokens", "val").data)
    assert abs(evaluate_positions(model, val, pad, 256, torch.device("cpu")).loss - b["nats_per_token"]) < \
        3 * b["splits"]["val"]["err"] + b["err"]


# ------------------------------------------------------------------------------ reproducibility
def _folder_digest(d: Path) -> dict[str, bytes]:
    files = sorted(p for p in (d / "tokens").iterdir() if p.suffix in (".bin", ".npy"))
    return {p.name: p.read_bytes() for p in files}


def _jets_equal(a: Path, b: Path) -> None:
    import awkward as ak

    for s in SPLITS:
        ja, jb = ak.from_parquet(a / f"{s}.parquet"), ak.from_parquet(b / f"{s}.parquet")
        assert ak.to_list(ja) == ak.to_list(jb)


def test_several_workers_make_what_one_worker_makes(real_teacher, real_data, tmp_path):
    out = make_teacher_dataset(tmp_path / "w2", TeacherDataConfig(teacher=str(real_teacher), n_jets=240,
                                                                  chunk_jets=80, workers=2), progress=False)
    assert _folder_digest(out) == _folder_digest(real_data)
    rows = _all_rows(out)
    assert len(np.unique(rows, axis=0)) == len(rows)  # every chunk samples its own rows (per-chunk seeds)
    a = json.loads((out / "tokens" / "index.json").read_text())
    b = json.loads((real_data / "tokens" / "index.json").read_text())
    assert a == b  # shards, sha256s and every entropy number, bit for bit
    _jets_equal(out, real_data)
    # another chunking samples other rows (per-chunk seeds), from the same distribution
    other = make_teacher_dataset(tmp_path / "c120", TeacherDataConfig(teacher=str(real_teacher), n_jets=240,
                                                                     chunk_jets=120), progress=False)
    assert _folder_digest(other) != _folder_digest(real_data)


def test_interrupted_make_resumes_to_the_same_data(real_teacher, real_data, tmp_path, monkeypatch):
    cfg = TeacherDataConfig(teacher=str(real_teacher), n_jets=240, chunk_jets=80)
    real_chunk = T.make_teacher_chunk

    def dies_on_chunk_2(task, out, runtime):
        if task.index == 2:
            raise KeyboardInterrupt("killed")
        return real_chunk(task, out, runtime)

    monkeypatch.setattr(T, "make_teacher_chunk", dies_on_chunk_2)
    with pytest.raises(KeyboardInterrupt):
        make_teacher_dataset(tmp_path / "r", cfg, progress=False)
    assert not (tmp_path / "r" / "manifest.json").exists() and not (tmp_path / "r" / "tokens" / "index.json").exists()
    monkeypatch.setattr(T, "make_teacher_chunk", real_chunk)
    out = make_teacher_dataset(tmp_path / "r", cfg, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["chunks_made"] == 1 and manifest["n_chunks"] == 3
    assert _folder_digest(out) == _folder_digest(real_data)
    assert json.loads((out / "tokens" / "index.json").read_text()) == \
        json.loads((real_data / "tokens" / "index.json").read_text())
    # a corrupt chunk part is made again; an unchanged folder is a no-op
    part = out / "chunks" / "chunk-00001.parquet"
    part.write_bytes(part.read_bytes()[:-10])
    make_teacher_dataset(out, cfg, progress=False)
    assert json.loads((out / "manifest.json").read_text())["chunks_made"] == 1
    mtime = (out / "manifest.json").stat().st_mtime_ns
    make_teacher_dataset(out, cfg, progress=False)
    assert (out / "manifest.json").stat().st_mtime_ns == mtime
    assert _folder_digest(out) == _folder_digest(real_data)


def test_float64_uniforms_are_their_own_stream():
    from scaling_sweeper.evaluate.generate import uniforms

    u32, u64 = uniforms(0, 0, 300, 4), uniforms(0, 0, 300, 4, torch.float64)
    assert u32.dtype == torch.float32 and u64.dtype == torch.float64 and u64.shape == (4, 300)
    # jets [100, 300) of the stream are the same whichever range is asked for
    assert torch.equal(uniforms(0, 100, 300, 4, torch.float64), u64[:, 100:])
    assert not torch.equal(u64.float(), u32)  # a distinct stream (the float32 one is unchanged)
    assert (u64 * 2**53 % 1 == 0).all() and (u64 * 2**24 % 1 != 0).any()  # 53-bit resolution


# ------------------------------------------------------------------------------ the folder
def test_folder_layout_tokenizer_and_decoded_jets(real_teacher, real_data):
    from scaling_sweeper.data.jets import read_jets
    from scaling_sweeper.data.tokenizer import load_tokenizer
    from scaling_sweeper.evaluate.generate import valid_rows

    t = resolve_teacher(real_teacher)
    tokens = real_data / "tokens"
    assert (tokens / "tokenizer.json").read_bytes() == t.tokenizer_file.read_bytes()
    tok = load_tokenizer(tokens)
    b = _block(real_data)
    assert sum(s["n_rows"] for s in b["splits"].values()) == 240
    manifest = json.loads((real_data / "manifest.json").read_text())
    for s in SPLITS:
        rows = np.asarray(TokenShard(tokens, s).data)
        jets = read_jets(real_data / f"{s}.parquet")
        ok = valid_rows(rows, tok) & (rows[:, 1] != tok.stop_token)
        assert len(jets) == int(ok.sum()) == manifest["splits"][s]["jets"]
        # the decoded jets are the valid rows' constituents, sorted by pt
        ref = tok.decode(rows[ok])
        import awkward as ak

        assert ak.all(ak.num(jets.part_pt, axis=1) == ak.num(ref.part_pt, axis=1))
        assert np.allclose(ak.to_numpy(ak.sum(jets.part_pt, axis=1)), ak.to_numpy(ak.sum(ref.part_pt, axis=1)),
                           rtol=1e-5)
        assert ak.all(jets.part_pt[:, :-1] >= jets.part_pt[:, 1:])
    # the per-row validation losses file gives the teacher's loss on the first n val rows
    known = read_known_entropy(tokens)
    val = np.asarray(TokenShard(tokens, "val").data)
    model = T.load_teacher_model(t.checkpoint, t.sha256)
    assert known.val_rows(10) == pytest.approx(_loss(model, val[:10], t.layout), rel=1e-10)


def test_real_data_has_no_known_entropy(tokens_dir):
    assert read_known_entropy(tokens_dir) is None


# ------------------------------------------------------------------------------ bad input
def test_bad_teachers_are_refused_before_any_compute(real_teacher, tmp_path, monkeypatch):
    def no_compute(*a, **k):
        raise AssertionError("sampled although the teacher is bad")

    monkeypatch.setattr(T, "make_teacher_chunk", no_compute)

    def make(teacher, **kw):
        return make_teacher_dataset(tmp_path / "out", TeacherDataConfig(teacher=str(teacher), n_jets=10, **kw),
                                    progress=False)

    with pytest.raises(DataError, match="no such run folder"):
        make(tmp_path / "missing")
    with pytest.raises(DataError, match="not a run folder"):
        make(tmp_path)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(real_teacher, unfinished)
    (unfinished / "STATUS").write_text("running\n")
    with pytest.raises(ConfigError, match="unfinished run"):
        make(unfinished)
    ckpt = next((unfinished / "checkpoints").glob("step_*.pt"))
    assert resolve_teacher(ckpt).step == int(ckpt.stem.split("_")[1])  # a chosen checkpoint is accepted
    corrupt = tmp_path / "corrupt"
    shutil.copytree(real_teacher, corrupt)
    bad = next((corrupt / "checkpoints").glob("step_*.pt"))
    blob = bytearray(bad.read_bytes())
    blob[len(blob) // 2 : len(blob) // 2 + 64] = b"\0" * 64
    bad.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError):
        make(corrupt)
    assert bad.exists()  # never renamed or replaced by an older checkpoint
    loose = tmp_path / "loose.pt"
    shutil.copy(ckpt, loose)
    with pytest.raises(DataError, match="checkpoints/"):
        make(loose)
    moved = tmp_path / "moved"
    shutil.copytree(real_teacher, moved)
    cfg = (moved / "config.yaml").read_text()
    from scaling_sweeper.base.config import load_yaml

    (moved / "config.yaml").write_text(cfg.replace(str(load_yaml(moved / "config.yaml")["data"]), str(tmp_path / "gone")))
    with pytest.raises(DataError, match="tokens folder"):
        make(moved)
    with pytest.raises(ConfigError):
        make(real_teacher, splits=(0.5, 0.6, 0.1))
    with pytest.raises(DataError, match="teacher's own"):
        make_teacher_dataset(real_teacher, TeacherDataConfig(teacher=str(real_teacher), n_jets=10), progress=False)
    assert not (tmp_path / "out" / "chunks").exists()


def test_corrupt_known_entropy_fails_training_before_compute(toy_data, tmp_path):
    from scaling_sweeper.train.config import TrainConfig
    from scaling_sweeper.train.single import run_trial

    data = tmp_path / "data"
    shutil.copytree(toy_data, data)
    npy = data / "tokens" / VAL_NLL_FILE
    npy.write_bytes(npy.read_bytes()[:-16])
    cfg = TrainConfig(size="Pico", data=str(data / "tokens"), tokens=100 * 5, steps=5, batch_size=8, threads=1)
    with pytest.raises(DataError, match="teacher_nll_val"):
        run_trial(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ results row
def test_student_row_and_trials_table_carry_the_known_entropy(toy_teacher, toy_data, tmp_path, one_thread):
    import polars as pl

    from analysis.tables import scan_table
    from scaling_sweeper.results.tables import write_cell_tables
    from scaling_sweeper.train.checkpoint import load_model

    row = _train(toy_data / "tokens", tmp_path / "student", 20, tokens=2000 * 5, eval_batches=3)
    b = _block(toy_data)
    assert row["data_entropy"] == b["nats_per_token"] and row["data_entropy_err"] == b["err"]
    # the teacher's loss on exactly the student's 48 validation rows (independent computation)
    t = resolve_teacher(toy_teacher)
    val = np.asarray(TokenShard(toy_data / "tokens", "val").data)[:48]
    assert row["data_entropy_val"] == pytest.approx(_loss(load_model(toy_teacher)[0], val, t.layout), rel=1e-9)
    stored = json.loads((tmp_path / "student" / "result.json").read_text())
    assert stored["data_entropy"] == row["data_entropy"]
    write_cell_tables(tmp_path / "sweep", "cell0", {**stored, "sweep": "s", "cell_id": "cell0"}, [])
    got = scan_table(tmp_path / "sweep", "trials").collect()
    assert got["data_entropy"][0] == pytest.approx(b["nats_per_token"])
    assert got["data_entropy_val"][0] == pytest.approx(row["data_entropy_val"])
    assert got.schema["data_entropy_err"] == pl.Float64
    # real data: the columns are null
    real = _train(toy_teacher.parent / "tokens", tmp_path / "real_student", 5)
    assert real["data_entropy"] is None and real["data_entropy_val"] is None


# ------------------------------------------------------------------------------ CLI
def test_cli_data_make_teacher_and_info(real_teacher, real_data, tmp_path, capsys):
    from scaling_sweeper.cli import main

    out = tmp_path / "cli"
    rc = main(["data", "make", "--source", "teacher", "--teacher", str(real_teacher), "--n-jets", "240",
               "--chunk-jets", "80", "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "entropy H = " in text and "nats/token" in text
    assert _folder_digest(out) == _folder_digest(real_data)
    assert main(["data", "info", str(out / "tokens")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["data_entropy"]["nats_per_token"] == _block(real_data)["nats_per_token"]
    assert main(["data", "make", "--source", "teacher", "--out", str(tmp_path / "x")]) == 2
    assert "--teacher" in capsys.readouterr().err
    assert main(["data", "make", "--teacher", str(real_teacher), "--out", str(tmp_path / "x")]) == 2
    assert main(["data", "make", "--source", "teacher", "--teacher", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "x")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_two_makes_never_write_one_folder(toy_teacher, tmp_path):
    from scaling_sweeper.data.chunks import make_lock

    with make_lock(tmp_path / "out"):
        with pytest.raises(DataError, match="being written by another"):
            make_teacher_dataset(tmp_path / "out", TeacherDataConfig(teacher=str(toy_teacher), n_jets=10),
                                 progress=False)
    assert not (tmp_path / "out" / "chunks").exists()
    make_teacher_dataset(tmp_path / "out", TeacherDataConfig(teacher=str(toy_teacher), n_jets=10), progress=False)
    assert (tmp_path / "out" / "manifest.json").is_file()
