"""The one step loop (train/lifecycle.run_steps) with stand-in trainers, no data or model:
training time is measured to the host sync (a GPU runs ahead of Python), and the ZeRO worker
asks its driver whether to stop only on sync steps and every POLL_STEPS steps, never every step."""

from __future__ import annotations

import pytest
import torch

from scaling_sweeper.train import lifecycle
from scaling_sweeper.train.config import TrainConfig
from scaling_sweeper.train.lifecycle import Lifecycle, run_steps

SEQ = 10


def _cfg(**kw) -> TrainConfig:
    base = dict(size="Pico", data="d", tokens=1000, steps=30, batch_size=4, log_every=7, eval_every=14,
                ckpt_every=50, warmup_steps=0)
    return TrainConfig(**{**base, **kw})


class FakeClock:
    """perf_counter of a machine whose device runs `device_s` per step, asynchronously: issuing a
    step costs the host nothing, the host sync waits for every step issued since the last one."""

    def __init__(self, device_s: float):
        self.t, self.device_s, self.queued = 0.0, device_s, 0

    def perf_counter(self) -> float:
        return self.t

    def sync(self) -> None:
        self.t += self.queued * self.device_s
        self.queued = 0


class AsyncSteps:
    """A lifecycle.StepTrainer whose steps are queued on a device and run at the host sync."""

    def __init__(self, clock: FakeClock):
        self.clock, self.records, self.saves = clock, [], []

    def new_accumulator(self) -> torch.Tensor:
        return torch.zeros(())

    def step(self, step: int, lr: float, acc: torch.Tensor) -> None:
        self.clock.queued += 1
        acc += 1.0

    def poll(self, step: int, sync_due: bool) -> bool:
        return False

    def total_loss(self, acc: torch.Tensor) -> float:
        self.clock.sync()  # float() of a device tensor waits for the device
        return float(acc)

    def validate(self):
        return 2.0, {}

    def log(self, rec, checkpoint_follows: bool) -> None:
        self.records.append(rec)

    def save(self, lr: float, last: bool) -> None:
        self.saves.append(last)


def test_training_time_runs_to_the_host_sync(monkeypatch):
    """30 steps of 0.25 device-seconds each: the run's training time is 7.5 s and the row's
    tokens_per_s counts it (timing the Python side of each step alone would give 0 s)."""
    clock = FakeClock(device_s=0.25)
    monkeypatch.setattr(lifecycle, "time", clock)
    cfg = _cfg()
    book = Lifecycle(cfg, SEQ, n_incl=100)
    trainer = AsyncSteps(clock)
    outcome = run_steps(book, trainer)
    assert outcome["step"] == 30 and not outcome["stopped"]
    assert outcome["train_s"] == pytest.approx(30 * 0.25)
    assert [r["step"] for r in trainer.records] == [7, 14, 21, 28, 30] and trainer.saves == [True]
    assert all(r["train_loss"] == 1.0 for r in trainer.records)  # each record: the mean of its steps
    assert trainer.records[0]["tokens_per_s"] == pytest.approx(7 * 4 * SEQ / (7 * 0.25))


def test_zero_worker_polls_its_driver_on_sync_steps_only(monkeypatch):
    """ZeroSteps.poll (the real one) over the loop: a relay round trip on log, evaluation,
    checkpoint and last steps and every POLL_STEPS steps; a stop asked for is honoured there."""
    ray = pytest.importorskip("ray")
    from scaling_sweeper.train import zero

    ticks: list[int] = []
    stop_at = {"step": None}

    class Relay:
        class put:  # noqa: N801 - stands for the actor method `put`
            @staticmethod
            def remote(kind, m):
                assert kind == "tick"
                ticks.append(m["step"])
                return stop_at["step"] is not None and m["step"] >= stop_at["step"]

    class ZeroStandIn(AsyncSteps, zero.ZeroSteps):
        poll = zero.ZeroSteps.poll

        def __init__(self):
            super().__init__(FakeClock(0.0))
            self.relay, self.rank, self.attempt, self.fault = Relay, 0, "a", None
            self.flag = torch.zeros(1)

    monkeypatch.setattr(ray, "get", lambda x: x)
    monkeypatch.setattr(torch.distributed, "broadcast", lambda t, src: None)
    cfg = _cfg()
    run_steps(Lifecycle(cfg, SEQ, n_incl=100), ZeroStandIn())
    assert zero.POLL_STEPS == 10
    assert ticks == [7, 10, 14, 20, 21, 28, 30]  # sync steps 7 14 21 28 30, and every 10th
    ticks.clear()
    stop_at["step"] = 11  # asked between polls: honoured at the next one, with a checkpoint
    trainer = ZeroStandIn()
    outcome = run_steps(Lifecycle(cfg, SEQ, n_incl=100), trainer)
    assert outcome["stopped"] and outcome["step"] == 14 and ticks == [7, 10, 14] and trainer.saves == [False]
