"""The evaluation grid (train/eval_grid.py, issue 25 item 8): the log grid's steps against a
closed form, the step loop evaluating exactly there, linear unchanged, its cost, and cell ids
that do not move."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scaling_sweeper.base.config import to_dict
from scaling_sweeper.base.errors import ConfigError
from scaling_sweeper.train.config import TrainConfig
from scaling_sweeper.train.eval_grid import eval_flops_fraction, eval_steps, is_eval_step, log_grid
from scaling_sweeper.train.lifecycle import Lifecycle, run_steps


def _cfg(**kw) -> TrainConfig:
    base = dict(size="Pico", data="d", tokens=1000, steps=30, batch_size=4, log_every=7, eval_every=14,
                ckpt_every=50, warmup_steps=0)
    return TrainConfig(**{**base, **kw})


def _closed_form(steps: int, per_decade: int) -> list[int]:
    """round(10^(k / per_decade)) <= steps, distinct, plus the last step (numpy, vectorised)."""
    k = np.arange(0, per_decade * (math.log10(steps) + 1) + 1)
    s = np.floor(10.0 ** (k / per_decade) + 0.5).astype(int)
    return sorted(set(s[s <= steps].tolist()) | {steps})


class Steps:
    """A StepTrainer stand-in (no model): records which steps evaluate and which log."""

    def __init__(self):
        self.evals, self.records = [], []

    def new_accumulator(self):
        return torch.zeros(())

    def step(self, step, lr, acc):
        acc += 1.0

    def poll(self, step, sync_due):
        return False

    def total_loss(self, acc):
        return float(acc)

    def validate(self):
        return 2.0, {}

    def log(self, rec, checkpoint_follows):
        self.records.append(rec["step"])
        if rec["val_loss"] is not None:
            self.evals.append(rec["step"])

    def save(self, lr, last):
        pass


@pytest.mark.parametrize("steps, per_decade", [(79, 8), (625, 8), (48077, 8), (30, 3), (1, 8), (1000, 20)])
def test_log_grid_is_the_closed_form(steps, per_decade):
    cfg = _cfg(steps=steps, eval_grid="log", eval_per_decade=per_decade)
    want = _closed_form(steps, per_decade)
    assert eval_steps(cfg) == want
    assert [s for s in range(1, steps + 1) if is_eval_step(cfg, s)] == want


def test_log_grid_counts_and_absolute_steps():
    """8 per decade: 15 evaluations in 79 steps, 22 in 625; a shorter run evaluates at exactly the
    longer run's steps below its end (the grid is absolute, not stretched per run)."""
    short, long = _cfg(steps=79, eval_grid="log"), _cfg(steps=625, eval_grid="log")
    assert len(eval_steps(short)) == 15 and len(eval_steps(long)) == 22
    assert [s for s in eval_steps(long) if s < 79] == eval_steps(short)[:-1]
    assert log_grid(625, 8) >= log_grid(79, 8)


def test_step_loop_evaluates_on_the_grid():
    """run_steps evaluates exactly at eval_steps: the log grid, and today's linear grid unchanged
    (every eval_every steps and the last); log steps stay log steps."""
    for cfg, want in ((_cfg(), [14, 28, 30]), (_cfg(eval_grid="log", eval_per_decade=4), [1, 2, 3, 6, 10, 18, 30])):
        tr = Steps()
        run_steps(Lifecycle(cfg, 10, n_incl=100), tr)
        assert tr.evals == want == eval_steps(cfg)
        assert sorted(set(tr.records)) == sorted({*range(7, 31, 7), *want})


def test_sync_due_on_every_grid_step():
    """An evaluation step is a host-sync step (the ZeRO worker polls there)."""
    cfg = _cfg(eval_grid="log", eval_per_decade=4, log_every=100)
    book = Lifecycle(cfg, 10, n_incl=100)
    due = []
    for s in range(1, 31):
        book.step = s
        due.append(book.sync_due())
    assert [s for s, d in zip(range(1, 31), due) if d] == [1, 2, 3, 6, 10, 18, 30]


def test_eval_cost_fraction_closed_form():
    """n_evals * n_val / (3 * steps * batch): the demo's XS at 625 steps with 512 validation jets
    evaluates 5 times on the linear grid (eval_every 125), 22 times on the log grid."""
    lin = _cfg(steps=625, batch_size=16, eval_every=125)
    log = _cfg(steps=625, batch_size=16, eval_grid="log")
    assert eval_flops_fraction(lin, 512) == pytest.approx(5 * 512 / (3 * 625 * 16))
    assert eval_flops_fraction(log, 512) == pytest.approx(22 * 512 / (3 * 625 * 16))


def test_grid_config_is_checked():
    with pytest.raises(ConfigError, match="eval_grid"):
        _cfg(eval_grid="every")
    with pytest.raises(ConfigError, match="eval_per_decade must be >= 1"):
        _cfg(eval_grid="log", eval_per_decade=0)
    with pytest.raises(ConfigError, match="only the log grid uses it"):
        _cfg(eval_per_decade=4)


def test_grid_fields_keep_every_pinned_id():
    """The grid does not change the trained model: not part of a cell id, so the first release's
    ids (tests/test_sweep_spec.py::test_cell_ids_pinned) hold with either grid."""
    from scaling_sweeper.sweep.cells import ID_EXCLUDED, cell_id_of

    assert {"eval_grid", "eval_per_decade"} <= ID_EXCLUDED
    kw = dict(size="Pico", data="d", tokens=13000, steps=10, batch_size=4)
    for extra in ({}, {"eval_grid": "log"}, {"eval_grid": "log", "eval_per_decade": 20}):
        assert cell_id_of(to_dict(TrainConfig(**kw, **extra))) == "6d7e73b794fc", extra


def test_simulated_trainer_writes_its_curve_on_the_grid(tmp_path):
    """The train_fn double (sweep/simulated_trainer.py) writes a record at each log-grid step, as
    the real trainer evaluates; on the linear grid it keeps its stride."""
    from analysis.design.simulate import SimulatedLoss
    from analysis.synthetic import TrueLaw
    from scaling_sweeper.base.runfolder import read_jsonl
    from scaling_sweeper.sweep.simulated_trainer import SimulatedTrainer

    fn = SimulatedTrainer(SimulatedLoss(TrueLaw()), seq_len=130, vocab_size=8195)
    for name, kw in (("lin", {}), ("log", {"eval_grid": "log"})):
        cfg = _cfg(size="XS", tokens=1_300_000, steps=625, batch_size=16, eval_every=125, **kw)
        fn(cfg, tmp_path / name)
        steps = [r["step"] for r in read_jsonl(tmp_path / name / "metrics.jsonl")]
        assert steps == ([125, 250, 375, 500, 625] if name == "lin" else eval_steps(cfg))
