"""The query shell (`sweeper query` with no statement) and the one name of the results root
(`--storage` on every command, `--runs` a hidden deprecated alias)."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from analysis.shell import run_shell, split_statements
from analysis.synthetic import synthetic_rows, write_synthetic_sweep
from analysis.tables import Tables
from scaling_sweeper.cli import build_parser
from scaling_sweeper.cli import main as cli_main
from scaling_sweeper.cli.options import storage_overrides
from scaling_sweeper.results.tables import write_cell_tables

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    write_synthetic_sweep(root / "syn", seeds=1, failed=1, n_curve_points=3)
    return root


def _sweeper(args: list[str], stdin: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaling_sweeper.cli", *args], input=stdin, cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_shell_multiline_helpers_errors_piped(results):
    n = pl.read_parquet(list((results / "syn" / "tables" / "trials").glob("*.parquet"))).height
    script = (
        ".tables\n"
        ".schema trials\n"
        "SELECT status,\n"          # one statement over three lines
        "       count(*) AS n_cells\n"
        "  FROM trials GROUP BY status ORDER BY status;\n"
        "SELECT nope FROM trials;\n"  # an error: one line, the shell goes on
        ".nosuch\n"
        "SELECT 41 + 1 AS answer; SELECT ';' AS semi;\n"  # two statements on one line
    )
    p = _sweeper(["query", "--storage", str(results)], script)
    assert p.returncode == 1, p.stderr  # piped input with a failed statement: scripts notice
    out = p.stdout
    assert out.splitlines()[0].split() == ["trials", str(n), "rows"]  # .tables
    assert "swd_floor Float64" in out and "cell_id String" in out  # .schema trials
    assert "n_cells" in out and "done" in out and "failed" in out
    assert "answer" in out and "42" in out  # the statement after the errors ran
    assert "semi" in out
    err = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(err) == 2, p.stderr
    assert err[0].startswith("error: query failed:") and "nope" in err[0]
    assert err[1].startswith("error: unknown command .nosuch")
    assert "Traceback" not in p.stderr


def test_shell_formats_and_output_file(results, tmp_path):
    out = tmp_path / "out.csv"
    script = "SELECT size FROM trials WHERE size = 'Pico' LIMIT 1;\nSELECT 7 AS seven;\n"
    p = _sweeper(["query", "--storage", str(results), "--format", "csv", "-o", str(out)], script)
    assert p.returncode == 0, p.stderr
    assert out.read_text() == "size\nPico\nseven\n7\n"  # each result appended
    assert p.stderr.count("wrote ") == 2
    p = _sweeper(["query", "--storage", str(results)], ".format json\nSELECT 3 AS x;\n.format nope\n")
    assert p.stdout.strip() == '[{"x":3}]'
    assert p.stderr.strip().startswith("error: unknown format 'nope'")


class _Feed(io.StringIO):
    """Piped input that runs `hooks[i]` just before handing out line i (a sweep writing rows)."""

    def __init__(self, lines: list[str], hooks: dict[int, object]):
        super().__init__("".join(lines))
        self.i, self.hooks = 0, hooks

    def readline(self, *a):
        if self.i in self.hooks:
            self.hooks[self.i]()
        self.i += 1
        return super().readline(*a)


def test_shell_sees_rows_written_while_open(tmp_path):
    root = tmp_path / "runs"
    rows = synthetic_rows("live", seeds=1, failed=0)[:3]
    write_cell_tables(root / "live", rows[0]["cell_id"], rows[0], [])

    def append():  # two more cells finish while the shell is open
        for r in rows[1:]:
            write_cell_tables(root / "live", r["cell_id"], r, [])

    stdout = io.StringIO()
    q = "SELECT count(*) AS n FROM trials;\n"
    rc = run_shell(Tables(str(root)), fmt="csv", stdin=_Feed([q, q], {1: append}), stdout=stdout)
    assert rc == 0
    assert stdout.getvalue() == "n\n1\nn\n3\n"


def _pty_session(args: list[str], keys: list[bytes], env: dict) -> str:
    """Run `sweeper ARGS` on a pseudo-terminal, typing `keys` one chunk per prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.chdir(REPO)
        os.execve(sys.executable, [sys.executable, "-m", "scaling_sweeper.cli", *args], env)
    out = b""
    try:
        for k in [None, *keys]:
            if k is not None:
                os.write(fd, k)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # read until the next prompt
                r, _, _ = select.select([fd], [], [], 0.5)
                if r:
                    try:
                        chunk = os.read(fd, 65536)
                    except OSError:
                        return out.decode(errors="replace")
                    if not chunk:
                        break
                    out += chunk
                    if out.rstrip().endswith((b"sweeper>", b"...>")):
                        break
            else:
                raise AssertionError(f"no prompt; got {out[-500:]!r}")
        os.write(fd, b"\x04")  # Ctrl-D
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        os.waitpid(pid, 0)
        os.close(fd)
    return out.decode(errors="replace")


def test_shell_on_a_terminal_keeps_history_and_edits_lines(results, tmp_path):
    pytest.importorskip("readline")
    hist = tmp_path / "history"
    env = {**os.environ, "SWEEPER_HISTORY": str(hist), "TERM": "dumb", "COLUMNS": "120"}
    args = ["query", "--storage", str(results), "--format", "csv"]
    out = _pty_session(args, [b"SELECT 40 + 2\r", b"  AS answer;\r"], env)
    assert "sweeper>" in out and "...>" in out  # prompt and continuation prompt
    assert "answer\r\n42" in out
    assert "SELECT 40 + 2" in hist.read_text()  # history written on exit
    # a new session: the arrow keys recall both lines of the last one (each recalled line is
    # history's newest entry), and Ctrl-A moves to the start of the line to insert text there
    out = _pty_session(args, [b"\x1b[A\x1b[A\r", b"\x1b[A\x1b[A\r", b"6 AS y;\x01SELECT \r"], env)
    assert "answer\r\n42" in out
    assert "y\r\n6" in out
    assert "error" not in out


def test_results_root_has_one_name(results, capsys, tmp_path):
    parser = build_parser()
    for cmd in (["query"], ["report", "s"], ["dashboard"], ["status"], ["resume", "s"], ["logs", "s"],
                ["stop", "s"], ["budget"]):
        a = parser.parse_args([*cmd, "--storage", "X"])
        assert a.storage == "X", cmd
        assert parser.parse_args(cmd).storage == "runs", cmd
    for cmd in (["plan", "s.yaml"], ["run", "s.yaml"], ["submit", "s.yaml", "--address", "http://h:8265"]):
        a = parser.parse_args([*cmd, "--set", "storage=Y", "--storage", "X"])
        assert storage_overrides(a)[-1] == "storage=X", cmd  # the flag wins over --set
        assert storage_overrides(parser.parse_args(cmd)) == [], cmd  # the spec's own storage
    # --storage on a spec command reaches the spec
    from scaling_sweeper.sweep.spec import load_specs

    specs = load_specs(REPO / "sweeps" / "smoke.yaml", storage_overrides(parser.parse_args(
        ["run", "sweeps/smoke.yaml", "--storage", str(tmp_path / "elsewhere")])))
    assert {s.storage for s in specs} == {str(tmp_path / "elsewhere")}
    # the old name still works, says it is deprecated, and is not advertised
    capsys.readouterr()
    assert cli_main(["query", "SELECT count(*) AS n FROM trials", "--runs", str(results), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("n\n") and "--runs is deprecated; use --storage" in err
    helps = subprocess.run([sys.executable, "-m", "scaling_sweeper.cli", "query", "--help"], cwd=REPO,
                           capture_output=True, text=True, timeout=60).stdout
    assert "--storage" in helps and "--runs" not in helps


def test_split_statements():
    assert split_statements("SELECT 1; SELECT 2;") == (["SELECT 1", "SELECT 2"], "")
    assert split_statements("SELECT ';' AS s; SELECT\n 2") == (["SELECT ';' AS s"], " SELECT\n 2")
    assert split_statements("SELECT 1 -- not the end;\n;") == (["SELECT 1 -- not the end;"], "")
    assert split_statements('SELECT "a;b" FROM t') == ([], 'SELECT "a;b" FROM t')
    assert split_statements(";;") == ([], "")
