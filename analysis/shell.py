"""The query shell: `sweeper query` with no statement (stdlib `cmd` + `readline`).

    sweeper> SELECT size, min(val_loss) AS best
        ...>   FROM trials GROUP BY size;
    sweeper> .tables
    sweeper> .schema trials

A statement runs when a line ends with `;` (it may span lines). Every statement lists the
table files anew, so the rows of a sweep that is still running appear as its cells finish.
Output is the same as the one-shot form (`analysis.query.emit`: table, csv, json or parquet,
to the terminal or to --output, which the shell appends to). A bad statement prints one
`error: ...` line and the shell stays open. Line editing, tab completion of table and column
names, and history (kept in ~/.sweeper_history, or $SWEEPER_HISTORY) come from readline when
the input is a terminal; piped input is read without prompts, like sqlite3.
"""

from __future__ import annotations

import cmd
import os
import sys
from pathlib import Path
from typing import TextIO

import polars as pl

from analysis.errors import QueryError
from analysis.query import FORMATS, emit, query
from analysis.tables import TABLES, Tables

PROMPT = "sweeper> "
CONTINUATION = "    ...> "
HISTORY_LENGTH = 2000

HELP = """\
SQL statements end with ';' and may span lines. Tables: trials, curves, evals.
  .tables               the tables with their row counts
  .schema [TABLE]       columns and types (all tables without TABLE)
  .sweeps               the sweeps in the tables
  .format [FMT]         show or set the output format: table, csv, json, parquet
  .output [FILE]        append results to FILE (no FILE: back to the terminal)
  .maxrows [N]          rows shown by the table format
  .help                 this text
  .quit / .exit         leave (or Ctrl-D)"""


def split_statements(text: str) -> tuple[list[str], str]:
    """The complete statements in `text` (each ended by a `;` outside quotes and `--` comments,
    without it) and the unfinished rest."""
    out: list[str] = []
    start, i, quote, n = 0, 0, "", len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c == ";":
            stmt = text[start:i].strip()
            if stmt:
                out.append(stmt)
            start = i + 1
        i += 1
    return out, text[start:]


def history_file() -> Path:
    """Where the shell keeps its history ($SWEEPER_HISTORY, else ~/.sweeper_history)."""
    return Path(os.environ.get("SWEEPER_HISTORY") or Path.home() / ".sweeper_history")


class QueryShell(cmd.Cmd):
    """Interactive SQL over a Tables object; see the module docstring."""

    intro = ""
    identchars = ""  # every line goes to default(): SQL and dot commands are parsed here

    def __init__(self, tables: Tables, *, fmt: str = "table", output: str | None = None, max_rows: int = 50,
                 stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        stdin = stdin or sys.stdin
        self.interactive = stdin.isatty()
        super().__init__(stdin=stdin, stdout=stdout or sys.stdout)
        self.use_rawinput = self.interactive  # input() (readline editing) only on a terminal
        self.tables = tables
        self.fmt = fmt
        self.output = output
        self.max_rows = max_rows
        self.buffer: list[str] = []
        self.errors = 0
        self.prompt = PROMPT if self.interactive else ""
        self.done = False

    # ---- output
    def _say(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def _error(self, msg: str) -> None:
        self.errors += 1
        first = str(msg).strip().splitlines()[0] if str(msg).strip() else "error"
        sys.stderr.write(f"error: {first}\n")
        sys.stderr.flush()

    # ---- the loop
    def emptyline(self) -> bool:  # cmd's default repeats the last command
        return False

    def do_EOF(self, arg: str) -> bool:  # noqa: N802 (cmd's name for end of input)
        if self.buffer:
            self._run_sql(" ".join(self.buffer))  # a last statement without ';' still runs
            self.buffer = []
        if self.interactive:
            self._say("")
        return True

    def default(self, line: str) -> bool:
        stripped = line.strip()
        if not self.buffer and stripped.startswith("."):
            return self._dot(stripped)
        if not self.buffer and not stripped:
            return False
        self.buffer.append(line)
        complete, rest = split_statements("\n".join(self.buffer))
        self.buffer = [rest] if rest.strip() else []
        for sql in complete:
            self._run_sql(sql)
        self._set_prompt()
        return False

    def onecmd(self, line: str) -> bool:
        if line == "EOF":
            return self.do_EOF("")
        try:
            return self.default(line)
        except KeyboardInterrupt:
            self.buffer = []
            self._set_prompt()
            self._say("^C")
            return False

    def cmdloop(self, intro: str | None = None) -> None:
        while True:
            try:
                super().cmdloop(intro)
                return
            except KeyboardInterrupt:  # Ctrl-C at the prompt drops the statement being typed
                self.buffer = []
                self._set_prompt()
                self._say("^C")
                intro = ""

    def _set_prompt(self) -> None:
        if self.interactive:
            self.prompt = CONTINUATION if self.buffer else PROMPT

    # ---- SQL
    def _run_sql(self, sql: str) -> None:
        try:
            df = query(sql, self.tables)
            emit(df, self.fmt, self.output, max_rows=self.max_rows, append=self.fmt != "parquet",
                 stdout=self.stdout)
            if self.output:
                sys.stderr.write(f"wrote {df.height} rows to {self.output}\n")
        except QueryError as e:
            self._error(str(e))
        except (OSError, pl.exceptions.PolarsError) as e:
            self._error(f"{type(e).__name__}: {e}")

    # ---- dot commands
    def _dot(self, line: str) -> bool:
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip().rstrip(";").strip()
        handler = getattr(self, f"dot_{name.lower()}", None)
        if handler is None:
            self._error(f"unknown command .{name}; .help lists them")
            return False
        try:
            return bool(handler(arg))
        except (QueryError, OSError, pl.exceptions.PolarsError) as e:
            self._error(str(e))
            return False

    def dot_help(self, arg: str) -> None:
        self._say(HELP)

    def dot_quit(self, arg: str) -> bool:
        return True

    dot_exit = dot_quit

    def dot_tables(self, arg: str) -> None:
        frames = self.tables.frames()
        counts = {t: frames[t].select(pl.len()).collect().item() for t in TABLES}
        self._say("\n".join(f"{t:<8}{n:>10} rows" for t, n in counts.items()))

    def dot_schema(self, arg: str) -> None:
        names = [arg] if arg else list(TABLES)
        for t in names:
            if t not in TABLES:
                raise QueryError(f"no table {t!r}; tables: {', '.join(TABLES)}")
        frames = self.tables.frames()
        for t in names:
            schema = frames[t].collect_schema()
            cols = ",\n".join(f"  {c} {dtype}" for c, dtype in schema.items())
            self._say(f"{t} (\n{cols}\n)")

    def dot_sweeps(self, arg: str) -> None:
        self._say("\n".join(self.tables.sweeps()) or "(no sweeps yet)")

    def dot_format(self, arg: str) -> None:
        if not arg:
            self._say(self.fmt)
            return
        if arg not in FORMATS:
            raise QueryError(f"unknown format {arg!r}; formats: {', '.join(FORMATS)}")
        if arg == "parquet" and not self.output:
            raise QueryError("format parquet needs an output file (.output FILE first)")
        self.fmt = arg

    def dot_output(self, arg: str) -> None:
        if not arg and self.fmt == "parquet":
            raise QueryError("format parquet needs an output file; .format table first")
        self.output = arg or None
        if self.output:
            self._say(f"results go to {self.output}")

    def dot_maxrows(self, arg: str) -> None:
        if not arg:
            self._say(str(self.max_rows))
            return
        try:
            self.max_rows = int(arg)
        except ValueError:
            raise QueryError(f".maxrows needs a number, not {arg!r}") from None

    # ---- completion (readline): dot commands, table names, column names
    def completenames(self, text: str, *ignored: object) -> list[str]:
        return self.completedefault(text, "", 0, 0)

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = [f".{n[4:]}" for n in dir(self) if n.startswith("dot_")] if not line.strip() else []
        words += list(TABLES)
        try:
            for lf in self.tables.frames().values():
                words += lf.collect_schema().names()
        except Exception:  # noqa: BLE001 - completion must never break the prompt
            pass
        return sorted({w for w in words if w.startswith(text)})


def _load_history() -> None:
    try:
        import readline
    except ImportError:  # no readline (e.g. Windows): plain input
        return
    readline.set_history_length(HISTORY_LENGTH)
    try:
        readline.read_history_file(history_file())
    except (FileNotFoundError, OSError):
        pass


def _save_history() -> None:
    try:
        import readline

        readline.write_history_file(history_file())
    except (ImportError, OSError):
        pass


def run_shell(tables: Tables, *, fmt: str = "table", output: str | None = None, max_rows: int = 50,
              stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Run the query shell until .quit or end of input. Returns 0, or 1 when input was piped
    and a statement failed (so scripts notice)."""
    sh = QueryShell(tables, fmt=fmt, output=output, max_rows=max_rows, stdin=stdin, stdout=stdout)
    if sh.interactive:
        _load_history()
        where = tables.path + (f" (sweep {tables.sweep})" if tables.sweep else "")
        sh.intro = f"query shell on {where}; statements end with ';', .help for commands, Ctrl-D to leave"
    try:
        sh.cmdloop()
    finally:
        if sh.interactive:
            _save_history()
    return 1 if (sh.errors and not sh.interactive) else 0


__all__ = ["QueryShell", "history_file", "run_shell", "split_statements"]
