"""The per-cluster FLOP ledger: admission, spending, release, retries, concurrency."""

from __future__ import annotations

import math
import multiprocessing as mp
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaling_sweeper.base.errors import BudgetError
from scaling_sweeper.sweep import ledger as ledger_mod
from scaling_sweeper.sweep.ledger import Ledger, ledger_path

_SAFETY_NET = ledger_mod._check_within_budget


@pytest.fixture(autouse=True)
def no_safety_net(monkeypatch):
    """The ledger refuses to store an overspent state (`_check_within_budget`). Every test here runs
    with that last line switched off, so an overspend is caught by the test's own assertions
    (forked workers inherit the switch)."""
    monkeypatch.setattr(ledger_mod, "_check_within_budget", lambda state: None)


def test_safety_net_refuses_an_overspent_state():
    cells = {"s/a": {"state": "active", "planned": 8.0, "spent": 0.0},
             "s/b": {"state": "finished", "planned": 5.0, "spent": 5.0}}
    with pytest.raises(AssertionError, match="used > budget"):
        _SAFETY_NET({"budget": 10.0, "cells": cells})
    _SAFETY_NET({"budget": 13.0, "cells": cells})  # 8 + 5 fits


def test_admit_spend_release_and_reopen(tmp_path):
    led = Ledger.open(tmp_path, "c1", budget=100.0)
    assert led.admit("s/a", 60.0)
    assert not led.admit("s/b", 50.0)  # 60 + 50 > 100: refused and recorded
    assert "s/b" in led.refused()
    assert led.admit("s/b", 40.0)
    assert led.summary().left == pytest.approx(0.0)
    led.spend("s/a", 30.0)
    led.spend("s/a", 10.0)  # monotone: a smaller total is a no-op
    assert led.spent_by()["s/a"] == 30.0
    led.release("s/a")  # frees the unspent 30
    s = Ledger.open(tmp_path, "c1").summary()  # a fresh handle reads the same file
    assert (s.budget, s.spent, s.used, s.left) == (100.0, 30.0, 70.0, 30.0)
    assert ledger_path(tmp_path, "c1").is_file()


def test_retry_is_not_double_committed(tmp_path):
    led = Ledger.open(tmp_path, "c", budget=100.0)
    assert led.admit("s/a", 80.0)
    assert led.admit("s/a", 80.0)  # same active cell again: no second commitment
    assert led.summary().used == 80.0
    led.spend("s/a", 50.0)
    led.release("s/a")  # trial errored
    assert led.admit("s/a", 80.0)  # retry: charged max(80, 50) once, not 50 + 80
    assert led.summary().used == 80.0
    led.release("s/a", spent=80.0)
    assert led.summary().spent == 80.0 and led.summary().committed == 0.0


def test_spend_is_capped_by_budget(tmp_path):
    led = Ledger.open(tmp_path, "c", budget=100.0)
    assert led.admit("s/a", 50.0)
    assert led.admit("s/b", 50.0)
    assert led.spend("s/a", 80.0) == 50.0  # overshooting its commitment cannot eat b's share
    led.release("s/b", spent=10.0)
    assert led.spend("s/a", 80.0) == 80.0  # now there is room
    assert led.summary().used <= 100.0


def test_budget_below_used_and_bad_budget(tmp_path):
    led = Ledger.open(tmp_path, "c", budget=100.0)
    led.admit("s/a", 60.0)
    with pytest.raises(BudgetError, match="below what"):
        Ledger.open(tmp_path, "c", budget=50.0, set_budget=True)
    with pytest.raises(BudgetError, match="budget.flops"):
        Ledger.open(tmp_path, "d", budget=-1.0)
    assert Ledger.open(tmp_path, "c", budget=200.0, set_budget=True).summary().left == 140.0


def test_unlimited_budget_records_spending(tmp_path):
    led = Ledger.open(tmp_path, "c")
    assert led.admit("s/a", 1e30)
    led.release("s/a", spent=5.0)
    s = led.summary()
    assert s.budget is None and s.spent == 5.0 and math.isinf(s.left)


# ---------------------------------------------------------------------------------------------
# Property tests: a sequential reference model, and random concurrent operation sequences.

class RefLedger:
    """Independent in-memory re-statement of the accounting rules."""

    def __init__(self, budget):
        self.budget = budget
        self.cells = {}  # key -> [active, planned, spent]

    def used(self, skip=None):
        return sum(max(p, s) if a else s for k, (a, p, s) in self.cells.items() if k != skip)

    def admit(self, k, c):
        a, p, s = self.cells.get(k, [False, 0.0, 0.0])
        if a and p >= c:
            return True
        if self.used(skip=k) + max(c, s) > self.budget:
            return False
        self.cells[k] = [True, c, s]
        return True

    def spend(self, k, f):
        a, p, s = self.cells.setdefault(k, [True, 0.0, 0.0])
        cap = self.budget - self.used(skip=k)
        if a:
            cap = max(cap, p)
        self.cells[k][2] = min(max(s, f), max(cap, s))

    def release(self, k):
        if k in self.cells:
            self.cells[k][0] = False


ops = st.lists(
    st.tuples(
        st.sampled_from(["admit", "spend", "release"]),
        st.sampled_from(["s/a", "s/b", "s/c", "t/a"]),
        st.integers(min_value=0, max_value=60).map(float),
    ),
    min_size=1,
    max_size=25,
)


def _apply(led, op, key, amount):
    if op == "admit":
        return led.admit(key, amount)
    if op == "spend":
        return led.spend(key, amount)
    return led.release(key)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(budget=st.integers(min_value=1, max_value=150).map(float), seq=ops)
def test_matches_reference_model(tmp_path_factory, budget, seq):
    led = Ledger.open(tmp_path_factory.mktemp("led"), "c", budget=budget)
    ref = RefLedger(budget)
    for op, key, amount in seq:
        got = _apply(led, op, key, amount)
        want = _apply(ref, op, key, amount)
        if op == "admit":
            assert got == want
    state = led.state()["cells"]
    assert {k: c["spent"] for k, c in state.items()} == {k: v[2] for k, v in ref.cells.items()}
    assert led.summary().used == pytest.approx(ref.used())
    assert led.summary().used <= budget


def _worker(path, budget, seq, out):
    """Run ops, checking after each that the shared ledger never exceeds its budget."""
    led = Ledger(path, "c")
    bad = 0
    for op, key, amount in seq:
        _apply(led, op, key, amount)
        s = led.summary()
        if s.used > budget + 1e-9 or s.spent > budget + 1e-9:
            bad += 1
    out.append(bad) if isinstance(out, list) else out.put(bad)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(budget=st.integers(min_value=1, max_value=120).map(float), seqs=st.lists(ops, min_size=2, max_size=4))
def test_concurrent_threads_never_exceed_budget(tmp_path_factory, budget, seqs):
    led = Ledger.open(tmp_path_factory.mktemp("led"), "c", budget=budget)
    out: list[int] = []
    threads = [threading.Thread(target=_worker, args=(led.path, budget, s, out)) for s in seqs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [0] * len(seqs)
    st_ = led.state()
    assert math.fsum(c["spent"] for c in st_["cells"].values()) <= budget
    requested = {}
    for s in seqs:
        for op, key, amount in s:
            if op == "spend":
                requested[key] = max(requested.get(key, 0.0), amount)
    for key, c in st_["cells"].items():
        assert c["spent"] <= requested.get(key, 0.0)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(budget=st.integers(min_value=10, max_value=120).map(float), seqs=st.lists(ops, min_size=2, max_size=3))
def test_concurrent_processes_never_exceed_budget(tmp_path_factory, budget, seqs):
    led = Ledger.open(tmp_path_factory.mktemp("led"), "c", budget=budget)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(led.path, budget, s, q)) for s in seqs]
    for p in procs:
        p.start()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results == [0] * len(seqs)
    assert led.summary().used <= budget
