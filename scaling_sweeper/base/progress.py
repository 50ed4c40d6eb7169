"""Progress of a long step (jet generation, tokenizer fit and encoding, evaluation): a bar on a
terminal, plain lines in a file or pipe.

    with Progress(30000, "pythia8 jets", unit="jet") as bar:
        bar.update(20)

On a terminal (the stream is a TTY) it is a tqdm bar. Otherwise it writes one line when the
step starts, then at most one every `every_s` seconds (default 5; env SWEEPER_PROGRESS_EVERY_S),
and one when it ends:

    [pythia8 jets] 0/30,000 jet: started
    [pythia8 jets] 1,240/30,000 jet (4.1%) | 52.3 jet/s | ETA 9m12s | 24s elapsed
    [pythia8 jets] 30,000/30,000 jet: done in 9m41s (51.6 jet/s)

`enabled`: None = on unless SWEEPER_PROGRESS=0; False = silent (tests, workers).
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

EVERY_S_ENV = "SWEEPER_PROGRESS_EVERY_S"
ENABLE_ENV = "SWEEPER_PROGRESS"
DEFAULT_EVERY_S = 5.0


def format_duration(s: float | None) -> str:
    """Seconds as `1h02m`, `3m05s` or `42s`; None -> `?`."""
    if s is None or s != s or s == float("inf"):
        return "?"
    s = int(round(max(0.0, s)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def default_every_s() -> float:
    try:
        return max(0.0, float(os.environ.get(EVERY_S_ENV, DEFAULT_EVERY_S)))
    except ValueError:
        return DEFAULT_EVERY_S


def progress_enabled(enabled: bool | None = None) -> bool:
    if enabled is not None:
        return bool(enabled)
    return os.environ.get(ENABLE_ENV, "1").lower() not in ("0", "false", "no", "off")


def is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_text(desc: str, done: float, total: float | None, unit: str, elapsed_s: float) -> str:
    """The periodic line: done/total, percent, rate and ETA (pure)."""
    head = f"[{desc}] {done:,.0f}" + (f"/{total:,.0f}" if total else "") + f" {unit}"
    if total:
        head += f" ({100.0 * done / total:.1f}%)"
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    parts = [head, f"{rate:,.1f} {unit}/s"]
    if total:
        parts.append(f"ETA {format_duration((total - done) / rate) if rate > 0 else '?'}")
    parts.append(f"{format_duration(elapsed_s)} elapsed")
    return " | ".join(parts)


class Progress:
    """A progress display with tqdm's `update(n)` / `close()` (see the module docstring)."""

    def __init__(self, total: float | None, desc: str, *, unit: str = "it", stream: TextIO | None = None,
                 every_s: float | None = None, enabled: bool | None = None, bar: bool | None = None,
                 clock=time.monotonic):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = default_every_s() if every_s is None else every_s
        self.enabled = progress_enabled(enabled)
        self.clock = clock
        self.done = 0.0
        self.t0 = clock()
        self._last = self.t0
        self._closed = False
        self._bar = None
        if not self.enabled:
            return
        if bar if bar is not None else is_tty(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, smoothing=0.1)
        else:
            self._write(f"[{desc}] 0" + (f"/{total:,.0f}" if total else "") + f" {unit}: started")

    def _write(self, line: str) -> None:
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe must not stop the work
            self.enabled = False

    def update(self, n: float = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self.clock()
        if now - self._last >= self.every_s:
            self._last = now
            self._write(progress_text(self.desc, self.done, self.total, self.unit, now - self.t0))

    def note(self, text: str) -> None:
        """A one-off line about the step (e.g. a stage starting), bar or not."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(f"[{self.desc}] {text}", file=self.stream)
        else:
            self._write(f"[{self.desc}] {text}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            return
        el = self.clock() - self.t0
        rate = f" ({self.done / el:,.1f} {self.unit}/s)" if el > 0 else ""
        total = f"/{self.total:,.0f}" if self.total else ""
        self._write(f"[{self.desc}] {self.done:,.0f}{total} {self.unit}: done in {format_duration(el)}{rate}")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
