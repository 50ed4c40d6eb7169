"""torch.compile's recompile limit, handled on purpose instead of by a silent eager fallback.

Dynamo keeps at most `torch._dynamo.config.recompile_limit` compiled graphs per function (per
code object; torch's default is 8). When one more guard set (a new batch shape, dtype, attention
span, ...) arrives, that function runs EAGERLY for the rest of the process, with one log line.
Two places would hit it: the training loss on CUDA (`precision.compile_loss`: one static graph per
batch shape) in a Ray Tune worker that runs cell after cell (`reuse_actors=True`), and the
compiled decode step of sampling (`evaluate.generate`: one graph per attention span, batch
size, dtype and model size). The policy here:

1. `raise_recompile_limit()` lifts the process's limit to RECOMPILE_LIMIT (never lowers it).
2. `make_room(fn, n)` before a trial or an evaluation compiles `fn`: when fn already holds more
   than limit - n graphs (those of earlier trials in this process) or has fallen back, its
   graphs are dropped (`torch._dynamo.eval_frame.remove_from_cache`), so this trial compiles.
3. `watch(compiled, fn, what)` wraps the compiled callable; when dynamo reports the limit for
   fn (its "hit config.recompile_limit" log record), it says so (`warnings.warn` and the
   `scaling_sweeper` logger): a run that goes eager is never silent.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch

RECOMPILE_LIMIT = 64  # graphs per compiled function in one process (torch's default: 8)
DYNAMO_LOGGER = "torch._dynamo.convert_frame"  # where dynamo logs "hit config.recompile_limit"

log = logging.getLogger("scaling_sweeper.compile")
_HITS: list[str] = []  # messages of dynamo's recompile-limit records seen in this process


class _LimitRecords(logging.Handler):
    """Keeps dynamo's recompile-limit warnings (which name the function that went eager)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a logging handler must never raise
            return
        if "hit config." in msg and "recompile_limit" in msg:
            _HITS.append(msg)


def _listen() -> None:
    logger = logging.getLogger(DYNAMO_LOGGER)
    if not any(isinstance(h, _LimitRecords) for h in logger.handlers):
        logger.addHandler(_LimitRecords(logging.WARNING))


def _code(fn: Callable[..., Any]):
    return getattr(fn, "__code__", None) or fn.__func__.__code__  # type: ignore[attr-defined]


def _name(fn: Callable[..., Any]) -> str:
    """How dynamo names a function in its limit message: 'name' (file:first line)."""
    c = _code(fn)
    return f"'{c.co_name}' ({c.co_filename}:{c.co_firstlineno})"


def recompile_limit() -> int:
    return int(torch._dynamo.config.recompile_limit)


def raise_recompile_limit(limit: int | None = None) -> None:
    """Lift the process's per-function graph limit to at least `limit` (default RECOMPILE_LIMIT),
    and the accumulated limit with it; start listening for dynamo's limit records."""
    limit = RECOMPILE_LIMIT if limit is None else limit
    cfg = torch._dynamo.config
    if cfg.recompile_limit < limit:
        cfg.recompile_limit = limit
    if cfg.accumulated_recompile_limit < 4 * cfg.recompile_limit:
        cfg.accumulated_recompile_limit = 4 * cfg.recompile_limit
    _listen()


def cached_graphs(fn: Callable[..., Any]) -> int:
    """Compiled graphs (cache entries) dynamo holds for fn's code in this process."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    return len(_debug_get_cache_entry_list(_code(fn)))


def fell_back(fn: Callable[..., Any]) -> bool:
    """True if dynamo reported the recompile limit for fn (it then runs eagerly on new guards)."""
    name = _name(fn)
    return any(name in m for m in _HITS)


def make_room(fn: Callable[..., Any], needed: int = 1) -> int:
    """Drop fn's compiled graphs when fewer than `needed` more fit under the limit or it fell
    back; returns how many were dropped (0: left alone)."""
    _listen()
    n = cached_graphs(fn)
    if n + needed <= recompile_limit() and not fell_back(fn):
        return 0
    from torch._dynamo.eval_frame import remove_from_cache

    remove_from_cache(_code(fn))
    name = _name(fn)
    _HITS[:] = [m for m in _HITS if name not in m]
    log.info("dropped %d compiled graphs of %s to stay under the recompile limit (%d)", n, name, recompile_limit())
    return n


class Watched:
    """A compiled callable that warns once when its function falls back to eager (see module doc)."""

    def __init__(self, compiled: Callable[..., Any], fn: Callable[..., Any], what: str):
        self.compiled, self.fn, self.what = compiled, fn, what
        self.seen = -1  # len(_HITS) at the last check; -1: check after the first call
        self.warned = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.compiled(*args, **kwargs)
        if len(_HITS) != self.seen:  # a new limit record (or the first call): one look
            self.seen = len(_HITS)
            if not self.warned and fell_back(self.fn):
                self.warned = True
                msg = (f"{self.what} runs EAGERLY from here on: torch.compile hit its recompile limit "
                       f"({recompile_limit()} graphs) for {_name(self.fn)}; raise "
                       "torch._dynamo.config.recompile_limit or run fewer shapes per process")
                log.warning(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return out


def watch(compiled: Callable[..., Any], fn: Callable[..., Any], what: str) -> Watched:
    """`compiled` (torch.compile of fn) wrapped so that an eager fallback of fn is reported."""
    _listen()
    return Watched(compiled, fn, what)
