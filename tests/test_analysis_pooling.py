"""analysis.pooling: sweeps of different phases or schedules are never pooled into one fit by
default; the CLI says what it pooled (and what not)."""

from __future__ import annotations

from analysis.pooling import describe, pooling_groups, read_signature, signature


def _spec(phase, **train):
    return {"phase": phase, "train": train}


def test_signature_and_groups():
    a = signature(_spec("model_size", steps=600, batch_size=16, log_every=20))
    b = signature(_spec("model_size", steps=600, batch_size=16, log_every=5))  # logging: same schedule
    c = signature(_spec("model_size", steps=20, batch_size=16))  # another schedule
    d = signature(_spec("data_size", steps=600, batch_size=16))  # another phase
    assert a == b and a != c and a != d
    assert describe(a) == "model_size; steps 600, batch_size 16"
    assert pooling_groups({"a": a, "b": b, "c": c, "d": d}) == [["a", "b"], ["c"], ["d"]]
    iso = signature({"phase": "isoflop", "train": {}, "isoflop": {"passes": 1.0, "min_steps": 10}})
    assert describe(iso) == "isoflop; isoflop.min_steps 10, isoflop.passes 1"


def test_read_signature_and_cli_pooling_sentence(tmp_path):
    from scaling_sweeper.cli.analysis import _pooling

    for name, phase, steps in (("m", "model_size", 20), ("m2", "model_size", 20), ("d", "data_size", 20)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "spec.yaml").write_text(f"phase: {phase}\ntrain: {{steps: {steps}}}\n")
    assert read_signature(tmp_path, "m") == ("model_size", (("steps", 20),))
    assert read_signature(tmp_path, "missing") == ("?", ())
    groups, note = _pooling(tmp_path, ["m", "m2", "d"], pool=False)
    assert groups == [["m", "m2"], ["d"]]
    assert note.startswith("not pooled: the sweeps differ in phase or schedule") and "--pool" in note
    groups, note = _pooling(tmp_path, ["m", "d"], pool=True)
    assert groups == [["m", "d"]] and note.startswith("pooled into one fit (--pool): m (model_size; steps 20)")
    groups, note = _pooling(tmp_path, ["m", "m2"], pool=False)
    assert groups == [["m", "m2"]] and note.startswith("pooled into one fit (same phase and schedule)")


def test_sweeps_on_different_tokens_folders_are_never_pooled():
    """Two sweeps that differ only by their tokens folder (e.g. binned vs vq tokenizer): losses of
    different vocabularies are not one experiment, so they fall in different groups."""
    from analysis.pooling import pooling_groups, signature

    base = {"phase": "model_size", "train": {"steps": 200, "batch_size": 16}}
    sigs = {"tok-binned": signature({**base, "data": "data/x/tokens_binned"}),
            "tok-vq": signature({**base, "data": "data/x/tokens_vq"}),
            "again": signature({**base, "data": "data/x/tokens_binned"})}
    assert pooling_groups(sigs) == [["tok-binned", "again"], ["tok-vq"]]
