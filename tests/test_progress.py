"""scaling_sweeper.base.progress: periodic lines in a log (fake clock), a bar on a terminal, silence;
and the long steps that use it (jet generation, tokenizing) saying so as they start."""

from __future__ import annotations

import io

import pytest

from scaling_sweeper.base.progress import Progress, format_duration, progress_text


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_format_duration():
    assert format_duration(42) == "42s"
    assert format_duration(185) == "3m05s"
    assert format_duration(3725) == "1h02m"
    assert format_duration(None) == "?" and format_duration(float("inf")) == "?"


def test_progress_text_rate_and_eta():
    line = progress_text("jets", 250, 1000, "jet", 50.0)  # 5 jet/s, 750 left -> 150 s
    assert line == "[jets] 250/1,000 jet (25.0%) | 5.0 jet/s | ETA 2m30s | 50s elapsed"
    assert "ETA" not in progress_text("x", 3, None, "it", 1.0)  # unknown total: no ETA


def test_lines_in_a_log_start_every_few_seconds_and_end():
    out, clock = io.StringIO(), Clock()
    p = Progress(1000, "jets", unit="jet", stream=out, every_s=5.0, clock=clock)
    assert out.getvalue() == "[jets] 0/1,000 jet: started\n"  # at once, before any work
    clock.t += 1.0
    p.update(10)  # too soon for a line
    assert out.getvalue().count("\n") == 1
    clock.t += 4.0
    p.update(90)  # 5 s after the start: 100 jets, 20 jet/s, ETA 45 s
    last = out.getvalue().splitlines()[-1]
    assert last == "[jets] 100/1,000 jet (10.0%) | 20.0 jet/s | ETA 45s | 5s elapsed"
    clock.t += 2.0
    p.update(1)
    assert out.getvalue().count("\n") == 2
    p.note("stage two")
    clock.t += 3.0
    p.update(899)
    p.close()
    p.close()  # idempotent
    lines = out.getvalue().splitlines()
    assert lines[-3] == "[jets] stage two"
    assert lines[-2].startswith("[jets] 1,000/1,000 jet (100.0%)")
    assert lines[-1] == "[jets] 1,000/1,000 jet: done in 10s (100.0 jet/s)"


def test_terminal_gets_a_bar_and_disabled_is_silent(monkeypatch):
    tty = TTY()
    with Progress(10, "bar", unit="jet", stream=tty) as p:
        p.update(10)
    assert "\r" in tty.getvalue() and "10/10" in tty.getvalue() and "started" not in tty.getvalue()
    quiet = io.StringIO()
    with Progress(10, "x", stream=quiet, enabled=False) as p:
        p.update(10)
        p.note("nothing")
    assert quiet.getvalue() == ""
    monkeypatch.setenv("SWEEPER_PROGRESS", "0")
    with Progress(10, "x", stream=quiet) as p:
        p.update(10)
    assert quiet.getvalue() == ""


def test_tokenize_reports_progress_from_its_start(real_jets_dir, tmp_path, capsys):
    from scaling_sweeper.data.dataset import tokenize_dataset

    tokenize_dataset(real_jets_dir, tmp_path / "tokens")
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("[tokenize] 0/") and err[0].endswith("jet: started")
    assert err[1].startswith("[tokenize] fitting the tokenizer on")
    assert "done in" in err[-1]


@pytest.mark.slow
def test_jet_generation_reports_progress_from_its_start(capsys):
    pytest.importorskip("pythia8mc")
    from scaling_sweeper.data.pythia import generate_jets

    generate_jets(3, seed=1, workers=1)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "[pythia8 jets] 0/3 jet: started"
    assert err[-1].startswith("[pythia8 jets] 3/3 jet: done in")
