"""Memory estimates (DeepSpeed's estimators + Ranger + activations), `strategy: auto`, the
`sweeper memory` command and DeepSpeed config generation. No Ray, no training: fast.

References are closed forms written out here independently of the code: the ZeRO paper's
per-parameter bytes (Rajbhandari et al. 2020, mixed precision: 2 bytes fp16 params, 2 bytes fp16
grads, K = 12 bytes of fp32 optimizer state for Adam, + 4 for the fp32 grads DeepSpeed keeps),
plus 4 bytes of Lookahead slow weights for Ranger; Korthikanti et al. 2022 for activations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scaling_sweeper.base.config import from_dict, to_dict
from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.base.model_config import config_for_rows
from scaling_sweeper.cli import main
from scaling_sweeper.model import GPTConfig, config_for, count_params
from scaling_sweeper.train import strategy as memory
from scaling_sweeper.train.config import TrainConfig, ZeroConfig
from scaling_sweeper.train.deepspeed_config import TEMPLATE_DIR, TEMPLATES, build_ds_config, micro_batching
from scaling_sweeper.train.lifecycle import TrialData, derived_quantities
from scaling_sweeper.train.strategy import AUTO_CANDIDATES, STRATEGIES, resolve, template

V, S = 4099, 130


def test_largest_layer_is_the_tied_embedding_or_the_mlp():
    for size in ("Pico", "M", "XXL"):
        cfg = config_for(size, V, S)
        d = cfg.d_model
        assert memory.largest_layer_params(cfg) == max(V * d, S * d, 4 * d * d)
    wide = GPTConfig(n_layer=1, n_head=4, d_model=512, vocab_size=10, block_size=8)
    assert memory.largest_layer_params(wide) == 4 * 512 * 512  # c_fc


@pytest.mark.parametrize("gpus", [1, 8])
def test_model_states_match_the_zero_paper(gpus):
    cfg = config_for("XXL", V, S)
    _, P = count_params(cfg)
    big = memory.largest_layer_params(cfg)
    ests = {e.strategy: e for e in memory.estimate(cfg, gpus=gpus, micro_batch=1, seq_len=S - 1)}
    per_rank = lambda b: int(b * P / gpus)  # noqa: E731
    assert ests["ddp"].model_states_gpu == 2 * P + 18 * P + 4 * P
    assert ests["zero2"].model_states_gpu == pytest.approx(2 * P + per_rank(18) + per_rank(4), abs=2)
    assert ests["zero3"].model_states_gpu == pytest.approx(4 * big + per_rank(18) + per_rank(4), abs=2)
    assert ests["zero2_offload"].model_states_gpu == 2 * P  # only fp16 params stay on the GPU
    assert ests["zero3_offload"].model_states_gpu == 4 * big  # one gathered layer
    if gpus > 1:  # partitioning makes each stage lighter than the one before
        order = [ests[s].model_states_gpu for s in ("ddp", "zero2", "zero3", "zero2_offload", "zero3_offload")]
        assert order[0] > order[1] > order[2] and order[1] > order[3] > order[4]


def test_activation_bytes_closed_form():
    cfg = GPTConfig(n_layer=3, n_head=4, d_model=64, vocab_size=50, block_size=32)
    s, b, d, a, L, Vv = 32, 5, 64, 4, 3, 50
    logits = 2 * s * b * Vv * 4
    assert memory.activation_bytes(cfg, b, s) == L * s * b * d * 34 + logits
    assert memory.activation_bytes(cfg, b, s, fused_attention=False) == L * (s * b * d * 34 + 5 * a * s * s * b) + logits
    assert memory.activation_bytes(cfg, b, s, bytes_per_act=4) == 2 * L * s * b * d * 34 + logits


def test_auto_picks_the_lightest_strategy_that_fits():
    cfg = config_for("XXL", V, S)
    ests = {e.strategy: e.total_gpu for e in memory.estimate(cfg, gpus=8, micro_batch=8, seq_len=S - 1)}
    gib = memory.GIB
    pick = lambda mem: memory.choose_strategy(  # noqa: E731
        cfg, gpus=8, micro_batch=8, seq_len=S - 1, gpu_mem_gib=mem / gib, headroom=1.0
    )
    assert pick(10 * ests["ddp"]) == "ddp"
    assert pick(ests["ddp"] + 1) == "ddp"  # just fits (+1 byte: GiB float round-off)
    assert pick(ests["ddp"] - 1) == "zero2"
    assert pick(ests["zero2"] - 1) == "zero3"
    assert ests["zero2_offload"] > ests["zero3_offload"]
    assert pick(ests["zero3_offload"] + 1) == "zero3_offload"
    with pytest.raises(ConfigError, match="no strategy fits"):
        pick(ests["zero3_offload"] - 1)
    with pytest.raises(ConfigError):
        memory.choose_strategy(cfg, gpus=8, micro_batch=8, gpu_mem_gib=0)


def test_memory_cli_prints_every_strategy_and_the_choice(capsys):
    assert main(["memory", "--size", "XXL", "--gpus", "8", "--gpu-mem", "80"]) == 0
    out = capsys.readouterr().out
    for s in ("ddp", "zero2", "zero3", "zero2_offload", "zero3_offload"):
        assert s in out
    assert "auto -> ddp" in out
    assert main(["memory", "--size", "XXL", "--gpus", "8", "--gpu-mem", "2", "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["chosen"] != "ddp" and [r["strategy"] for r in js["strategies"]][0] == "ddp"
    assert main(["memory", "--size", "XXXL", "--gpus", "8"]) == 2
    assert "unknown size" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# DeepSpeed configs


def test_templates_in_cluster_dir_are_the_generated_ones():
    for name, t in TEMPLATES.items():
        assert json.loads((TEMPLATE_DIR / f"{name}.json").read_text()) == t, name


def test_ds_config_batch_arithmetic_and_precision():
    c = build_ds_config("zero3", batch_size=32, world_size=2, micro_batch=4, grad_clip=0.5, bf16=False)
    assert (c["train_batch_size"], c["train_micro_batch_size_per_gpu"], c["gradient_accumulation_steps"]) == (32, 4, 4)
    assert c["train_micro_batch_size_per_gpu"] * c["gradient_accumulation_steps"] * 2 == c["train_batch_size"]
    assert c["bf16"]["enabled"] is False and c["gradient_clipping"] == 0.5
    assert c["zero_optimization"]["stage"] == 3 and c["zero_allow_untested_optimizer"] is True
    g = build_ds_config("zero3_offload", batch_size=32, world_size=4, bf16=True)
    assert g["gradient_accumulation_steps"] == 1 and g["bf16"]["enabled"] is True
    assert g["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": True}
    assert micro_batching(12, 3) == (4, 1)
    with pytest.raises(ConfigError, match="not divisible"):
        micro_batching(10, 3)
    with pytest.raises(ConfigError, match="does not divide"):
        micro_batching(32, 2, 3)
    with pytest.raises(ConfigError, match="enables bf16"):
        build_ds_config("zero2", batch_size=8, world_size=2, overrides={"bf16": {"enabled": True}})
    with pytest.raises(ConfigError, match="train_batch_size=64"):
        build_ds_config("zero2", batch_size=8, world_size=2, overrides={"train_batch_size": 64})


def test_ds_config_user_template_and_overrides(tmp_path):
    p = tmp_path / "mine.json"
    p.write_text(json.dumps({"train_batch_size": "auto", "zero_optimization": {"stage": 2, "overlap_comm": True}}))
    c = build_ds_config("zero2", batch_size=8, world_size=2, template=p,
                        overrides={"zero_optimization": {"reduce_bucket_size": 123}})  # fmt: skip
    assert c["zero_optimization"] == {"stage": 2, "overlap_comm": True, "reduce_bucket_size": 123}
    assert c["train_micro_batch_size_per_gpu"] == 4
    with pytest.raises(ConfigError, match="no such file"):
        build_ds_config("zero2", batch_size=8, world_size=2, template=tmp_path / "missing.json")


def test_one_strategy_table():
    """Every template of the table has a DeepSpeed config of its stage and offloads; auto chooses
    among the five with a memory estimate, lightest first; (strategy, zero.offload) name them."""
    assert AUTO_CANDIDATES == ("ddp", "zero2", "zero3", "zero2_offload", "zero3_offload")
    for name, st in STRATEGIES.items():
        assert template(st.base, st.offload) is st
        if not st.distributed:
            continue
        zo = build_ds_config(name, batch_size=4, world_size=2)["zero_optimization"]
        assert zo["stage"] == st.stage, name
        assert ("offload_optimizer" in zo, "offload_param" in zo) == (st.offload_optimizer, st.offload_params), name
    assert template("zero2", "optimizer").name == "zero2_offload"
    assert template("zero3", "all").name == "zero3_offload"
    assert template("zero3", "optimizer").name == "zero3_offload_optimizer"
    assert template("single", "optimizer").name == "single"  # one process: the ZeRO section does not apply
    with pytest.raises(ConfigError, match="needs strategy zero3"):
        template("zero2", "all")
    with pytest.raises(ConfigError, match="ddp cannot offload"):
        template("ddp", "optimizer")
    with pytest.raises(ConfigError):
        ZeroConfig(num_workers=0)
    with pytest.raises(ConfigError):
        ZeroConfig(offload="gpu")


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(size="XXL", data="d", tokens=10_000, steps=10, batch_size=64, strategy="auto", **kw)


def test_auto_resolves_one_way_at_plan_and_trial_time():
    """The one resolver: a declared GPU memory decides (plan and trial time alike); without one,
    what the machine has (trial time) or AUTO_FALLBACK (planning, nothing to detect); an offload
    pick sets the offload; the estimate's precision follows the trial's numerics (fp32 on a GPU
    needs more memory than bf16)."""
    kw = dict(vocab_size=V, seq_len=S, micro_batch=8)
    big = _cfg(zero=ZeroConfig(num_workers=8, gpu_mem_gib=80.0), device="cuda")
    assert resolve(big, **kw).name == "ddp"
    assert resolve(big, **kw, detected_gib=0.5).name == "ddp"  # declared memory wins
    assert resolve(_cfg(zero=ZeroConfig(num_workers=8)), **kw).name == memory.AUTO_FALLBACK
    gcfg = config_for_rows("XXL", V, S)
    fp32 = {e.strategy: e.total_gpu for e in memory.estimate(gcfg, gpus=8, micro_batch=8, seq_len=S - 1, bf16=False)}
    small = (fp32["zero3"] + fp32["zero2_offload"]) / 2 / memory.GIB / 0.9  # fits zero2_offload, not zero3
    tiny = resolve(_cfg(zero=ZeroConfig(num_workers=8)), **kw, detected_gib=small)  # device cpu: fp32
    assert (tiny.name, tiny.base, tiny.offload) == ("zero2_offload", "zero2", "optimizer")
    # the same machine, declared or detected: one answer
    assert resolve(_cfg(zero=ZeroConfig(num_workers=8, gpu_mem_gib=small)), **kw).name == tiny.name
    # numerics: a memory where bf16 fits ddp but fp32 does not
    bf16 = {e.strategy: e.total_gpu for e in memory.estimate(gcfg, gpus=8, micro_batch=8, seq_len=S - 1)}
    mem = (bf16["ddp"] + fp32["ddp"]) / 2 / memory.GIB / 0.9
    assert resolve(_cfg(zero=ZeroConfig(num_workers=8, gpu_mem_gib=mem), device="cuda"), **kw).name == "ddp"
    assert resolve(_cfg(zero=ZeroConfig(num_workers=8, gpu_mem_gib=mem), device="cuda", precision="fp32"),
                   **kw).name != "ddp"


def test_zero_settings_are_one_section_and_old_keys_still_read():
    """The ZeRO settings are TrainConfig.zero; config.yaml files, checkpoints and specs of earlier
    versions spell them as top-level keys, which are read into the section."""
    old = {"size": "Pico", "data": "d", "tokens": 100, "steps": 1, "num_workers": 4, "micro_batch_size": 2,
           "zero_offload": "optimizer", "gpu_mem_gib": 40.0, "cpus_per_worker": 0.5}
    cfg = from_dict(TrainConfig, old)
    assert cfg.zero == ZeroConfig(num_workers=4, micro_batch_size=2, offload="optimizer", gpu_mem_gib=40.0,
                                  cpus_per_worker=0.5)
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="same setting"):
        from_dict(TrainConfig, {**old, "zero": {"num_workers": 2}})
    with pytest.raises(ConfigError, match="num_workers must be >= 1"):
        from_dict(TrainConfig, {**old, "num_workers": 0})


def test_memory_estimate_is_of_the_model_the_trainer_builds():
    """`sweeper memory` (estimate_for_size) sizes the model of token rows of seq_len: context
    seq_len - 1, as the trainer builds it (block_size = seq_len was one position too many)."""
    cfg = TrainConfig(size="M", data="d", tokens=S * 10, steps=1)
    data = TrialData(train=np.zeros((10, S)), val=np.zeros((1, S)), seq_len=S, vocab_size=V, pad_token=0)
    n_incl = derived_quantities(cfg, data)["N_incl"]
    gcfg = config_for_rows("M", V, S)
    (got,) = memory.estimate_for_size("M", vocab_size=V, seq_len=S, gpus=2, micro_batch=4, strategies=("zero2",))
    want, _ = memory.model_states_bytes("zero2", n_incl, memory.largest_layer_params(gcfg), gpus_per_node=2)
    assert got.model_states_gpu == want
    assert got.activations_gpu == memory.activation_bytes(gcfg, 4, S - 1)
