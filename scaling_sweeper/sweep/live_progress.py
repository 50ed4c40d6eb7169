"""The sweep driver's live output, a Ray Tune callback: the driver heartbeat file, and progress on
a stream (one live line on a terminal; in a file or pipe a line per cell state change and a
periodic summary). Imports Ray: the driver imports it once Ray is needed."""

from __future__ import annotations

import time
from pathlib import Path

from ray.tune import Callback

from scaling_sweeper.results import status as sweep_status


class ProgressCallback(Callback):
    """Heartbeat file + progress on `stream`: on a terminal one live line; in a file or pipe one
    line per cell state change and a short summary every `summary_every_s` (and at the start)."""

    def __init__(self, sweep_dirs: list[Path], every_s: float, stream, experiment: str,
                 summary_every_s: float = 60.0):
        self.sweep_dirs, self.every_s, self.stream, self.experiment = sweep_dirs, every_s, stream, experiment
        self.summary_every_s = summary_every_s
        self._last = 0.0
        self._last_summary = 0.0
        self._states: dict[tuple[str, str], str] = {}

    def _log(self, text: str) -> None:
        self.stream.write(f"{time.strftime('%H:%M:%S')} {text}\n")

    def on_step_end(self, iteration, trials, **info):  # Tune calls this every loop step
        now = time.time()
        if now - self._last < self.every_s:
            return
        self._last = now
        for d in self.sweep_dirs:
            sweep_status.write_driver(d, "running", experiment=self.experiment)
        if self.stream is None:
            return
        sts = [sweep_status.collect(d) for d in self.sweep_dirs]
        if getattr(self.stream, "isatty", lambda: False)():
            self.stream.write("\r" + sweep_status.summary_line(sts) + "\x1b[K")
            self.stream.flush()
            return
        first = not self._states
        for st in sts:
            for c in st.cells:
                key = (st.name, c.cell_id)
                if self._states.get(key) != c.state and not (first and c.state in ("pending", "done")):
                    self._log(sweep_status.cell_change_line(st, c))
                self._states[key] = c.state
        if first or now - self._last_summary >= self.summary_every_s:
            self._last_summary = now
            self._log(sweep_status.summary_line(sts))
        self.stream.flush()

