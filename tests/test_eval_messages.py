"""What `sweeper eval` tells the user: when and why it caps the number of jets, W1 with units."""

from __future__ import annotations

from scaling_sweeper.cli.evaluate import _w1_line
from scaling_sweeper.evaluate.observables import OBSERVABLE_UNITS, OBSERVABLES
from scaling_sweeper.evaluate.run import cap_note


def test_cap_note_says_how_many_and_why():
    assert cap_note(1000, 1000, 5000, "t.parquet") is None  # nothing dropped: nothing said
    note = cap_note(50_000, 1_500, 3_000, "data/demo/test.parquet")
    assert note.startswith("evaluating 1,500 jets, not the 50,000 asked: data/demo/test.parquet holds 3,000")
    assert "two disjoint real samples" in note and "--real" in note


def test_w1_line_has_units():
    assert set(OBSERVABLE_UNITS) == set(OBSERVABLES)
    out = {"w1_jet_pt": 12.3, "w1_jet_pt_err": 1.1, "w1_jet_mass": None, "w1_jet_mass_err": None,
           "w1_n_constituents": 3.0, "w1_n_constituents_err": 0.2, "w1_tau21": 0.05, "w1_tau21_err": 0.01,
           "w1_floor": {"jet_pt": 2.0}}
    line = _w1_line(out)
    assert "jet_pt 12.3 +- 1.1 GeV (floor 2)" in line
    assert "jet_mass n/a," in line  # no unit without a value
    assert "n_constituents 3 +- 0.2 constituents" in line and "tau21 0.05 +- 0.01" in line
