"""Naming sweeps and cells on the command line (no Ray, no training): a sweep, a suite (the stem
of the spec file a run came from), a spec file or a folder; a cell by id, prefix or size. Also
the sweep's file log (one line per cell state change plus a summary) and the --help texts."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from scaling_sweeper.base.errors import SweeperError
from scaling_sweeper.base.runfolder import atomic_write_json, write_status
from scaling_sweeper.cli import build_parser
from scaling_sweeper.cli import main as cli_main
from scaling_sweeper.results import status
from scaling_sweeper.sweep import addressing

SUITE = {"smk-model": ["Pico", "XXS"], "smk-data": ["Pico", "Pico"], "other": ["XS"]}


@pytest.fixture
def runs(tmp_path):
    """Three sweep folders: smk-model and smk-data of suite `smk` (in that file order), `other`
    of no suite (run before suites were recorded)."""
    storage = tmp_path / "runs"
    for i, (name, sizes) in enumerate(SUITE.items()):
        d = storage / name
        cells = [{"cell_id": f"{name[:3]}{name[-1]}{j}abc", "size": s, "C": 1.0e9, "D": 1.0e5 * (j + 1),
                  "steps": 10, "N_incl": 1000} for j, s in enumerate(sizes)]
        atomic_write_json(d / "cells.json", cells)
        (d / "spec.yaml").write_text(f"storage: {storage}\n")
        meta = {"name": name, "phase": "model_size"}
        if name != "other":
            meta |= {"suite": "smk", "suite_index": 1 - i}  # written out of order on purpose
        (d / "sweep.json").write_text(json.dumps(meta))
    return storage


def test_find_sweeps_by_name_suite_folder(runs):
    assert addressing.find_sweeps("other", runs) == [runs / "other"]
    assert addressing.find_sweeps(str(runs / "smk-data"), runs) == [runs / "smk-data"]
    assert addressing.find_sweeps("smk", runs) == [runs / "smk-data", runs / "smk-model"]  # suite order
    assert status.list_suites(runs) == {"smk": [runs / "smk-data", runs / "smk-model"]}
    with pytest.raises(SweeperError, match=r"no sweep 'nope' \(nor a suite or spec file.*smk-model.*suites: smk"):
        addressing.find_sweeps("nope", runs)


def test_find_sweeps_from_a_spec_file(runs, tmp_path):
    spec = tmp_path / "smk.yaml"
    spec.write_text(f"data: d\nstorage: {runs}\nsweeps:\n  - {{name: smk-model, phase: model_size, sizes: [Pico]}}\n"
                    "  - {name: never-run, phase: model_size, sizes: [Pico]}\n")
    assert addressing.find_sweeps(str(spec), runs) == [runs / "smk-model"]
    spec.write_text(f"data: d\nstorage: {runs}\nname: never-run\nphase: model_size\nsizes: [Pico]\n")
    with pytest.raises(SweeperError, match="none of its sweeps"):
        addressing.find_sweeps(str(spec), runs)


def test_find_cell_by_id_prefix_or_size(runs):
    dirs = addressing.find_sweeps("smk", runs)
    assert addressing.find_cell(dirs, "smkl1abc") == runs / "smk-model" / "smkl1abc"
    assert addressing.find_cell(dirs, "smkl0") == runs / "smk-model" / "smkl0abc"  # unique prefix
    assert addressing.find_cell([runs / "smk-model"], "xxs") == runs / "smk-model" / "smkl1abc"  # size
    with pytest.raises(SweeperError, match="names 3 cells"):  # Pico: one in smk-model, two in smk-data
        addressing.find_cell(dirs, "Pico")
    with pytest.raises(SweeperError, match="no cell 'XL'"):
        addressing.find_cell(dirs, "XL")


def test_cli_status_and_logs_of_a_suite(runs, capsys):
    assert cli_main(["status", "smk", "--storage", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "[smk-data]" in out and "[smk-model]" in out and "[other]" not in out
    assert f"run folders {runs / 'smk-model'}/<cell_id>" in out
    assert cli_main(["logs", "smk", "--storage", str(runs)]) == 0
    assert cli_main(["logs", "smk-model", "XXS", "--storage", str(runs)]) == 2  # not started: named error
    assert "has not started" in capsys.readouterr().err


def test_eval_names_a_cell_folder_that_exists(runs):
    from scaling_sweeper.cli.evaluate import run_folder

    write_status(runs / "smk-model" / "smkl0abc", "done")
    assert run_folder("smk-model", "Pico", str(runs)) == runs / "smk-model" / "smkl0abc"
    assert run_folder(str(runs / "smk-model" / "smkl0abc"), None, str(runs)) == runs / "smk-model" / "smkl0abc"
    assert run_folder("other", None, str(runs)) == runs / "other" / "othr0abc"
    with pytest.raises(SweeperError, match="has 2 cells: name one"):
        run_folder("smk-model", None, str(runs))


def test_write_sweep_files_records_and_keeps_the_suite(tmp_path):
    from scaling_sweeper.sweep.cells import DataShape, write_sweep_files
    from scaling_sweeper.sweep.spec import spec_from_dict

    spec = spec_from_dict({"name": "a", "phase": "model_size", "data": "d", "sizes": ["Pico"],
                           "storage": str(tmp_path)})
    shape = DataShape(seq_len=130, vocab_size=8195, train_tokens=None, train_sha256=None)
    write_sweep_files(spec, [], shape, suite=("smoke", 2))
    write_sweep_files(spec, [], shape)  # a resume (no file): the suite stays
    meta = json.loads((tmp_path / "a" / "sweep.json").read_text())
    assert meta["suite"] == "smoke" and meta["suite_index"] == 2


def test_sweep_file_log_is_state_changes_plus_summary(runs, monkeypatch):
    pytest.importorskip("ray")
    from scaling_sweeper.sweep.live_progress import ProgressCallback

    out = io.StringIO()
    dirs = addressing.find_sweeps("smk", runs)
    cb = ProgressCallback(dirs, 0.0, out, "exp", summary_every_s=3600.0)
    cb.on_step_end(0, [])  # start: all pending -> only the summary
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "[2 sweeps] done 0/4" in lines[0]
    cb.on_step_end(1, [])  # nothing changed, summary not due: nothing
    assert len(out.getvalue().splitlines()) == 1
    write_status(runs / "smk-model" / "smkl0abc", "done")
    atomic_write_json(runs / "smk-model" / "smkl0abc" / "result.json", {"C_spent": 1e9, "final_val_loss": 6.5})
    write_status(runs / "smk-data" / "smka1abc", "failed")
    cb.on_step_end(2, [])
    new = out.getvalue().splitlines()[1:]
    assert sorted(x.split(" ", 1)[1] for x in new) == [
        "smk-data/smka1abc Pico: failed", "smk-model/smkl0abc Pico: done (val_loss 6.5000, C 1e+09 FLOPs)"]
    assert all(len(x) < 120 for x in out.getvalue().splitlines())


def _actions(parser: argparse.ArgumentParser, command: str) -> list[argparse.Action]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in sub.choices[command]._actions if not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("command", ["resume", "logs", "status", "stop", "eval", "report"])
def test_help_describes_every_argument(command):
    parser = build_parser()
    actions = _actions(parser, command)  # a hidden deprecated alias (--runs) shares its dest with --storage
    described = {a.dest for a in actions if a.help and a.help != argparse.SUPPRESS}
    missing = [a.dest for a in actions if a.dest not in described]
    assert missing == []
