"""Running a list of independent, seeded tasks (dataset chunks, Pythia shares) and showing their
progress: in this process, on a local process pool, or on an executor the caller passes.

    run_tasks(fn, tasks, workers=4, on_done=...)      # here or on 4 spawned processes
    run_tasks(fn, tasks, executor=RayTasks(address))   # Ray tasks (scaling_sweeper.cluster.ray_tasks)

An executor is anything with `map(fn, tasks, on_done) -> results in task order` that calls
`call_task((fn, task))` per task; the data layer never imports Ray itself (the command line
builds the executor). A task's output depends on the task only, never on where it ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol


class TaskExecutor(Protocol):
    """Runs `call_task((fn, task))` for every task elsewhere (e.g. as Ray tasks on a cluster);
    returns the results in task order and calls `on_done(i, result)` as each task finishes."""

    def map(self, fn: Callable, tasks: Sequence[Any], on_done: Callable[[int, Any], None] | None) -> list: ...


def call_task(fn_task: tuple[Callable, Any]) -> Any:
    """fn(*task) for a tuple task, fn(task) otherwise."""
    fn, task = fn_task
    return fn(*task) if isinstance(task, tuple) else fn(task)


def run_tasks(
    fn: Callable,
    tasks: Sequence[Any],
    *,
    workers: int = 1,
    executor: TaskExecutor | None = None,
    on_done: Callable[[int, Any], None] | None = None,
) -> list:
    """Run fn(task) (fn(*task) for a tuple) for every task; returns the results in task order.
    executor: run them there; else workers=1 runs them here, workers>1 on a spawned process pool.
    `on_done(i, result)` is called as each task finishes (any order). A failing task's error is
    raised; what finished tasks wrote stays on disk."""
    if executor is not None:
        return executor.map(fn, tasks, on_done)
    results: list = [None] * len(tasks)
    if workers <= 1 or len(tasks) <= 1:
        for i, t in enumerate(tasks):
            results[i] = call_task((fn, t))
            if on_done:
                on_done(i, results[i])
        return results
    import multiprocessing as mp

    # spawn: workers must not inherit the parent's threads (torch, ray) through fork
    ctx = mp.get_context("spawn")
    with ctx.Pool(min(workers, len(tasks))) as pool:
        it = pool.imap_unordered(_indexed, [(i, fn, t) for i, t in enumerate(tasks)])
        for i, r in it:
            results[i] = r
            if on_done:
                on_done(i, r)
    return results


def _indexed(item: tuple[int, Callable, Any]) -> tuple[int, Any]:
    i, fn, task = item
    return i, call_task((fn, task))


class ChunkProgress:
    """Progress of chunked work through scaling_sweeper.base.progress: a bar on a terminal; in a
    file or pipe a line when it starts and one per finished chunk (jets done/total, jets/s of this
    run, ETA). enabled None: on (SWEEPER_PROGRESS=0 turns it off); False: silent."""

    def __init__(self, n_chunks: int, n_jets: int, what: str = "jets", *, enabled: bool | None = None,
                 done_chunks: int = 0, done_jets: int = 0):
        from scaling_sweeper.base.progress import Progress

        self.what = what
        self.n_chunks, self.n_jets = n_chunks, n_jets
        self.chunks, self.jets, self.new_jets = done_chunks, done_jets, 0
        self.t0 = time.perf_counter()
        desc = what + (f", {done_jets} jets already made" if done_jets else "")
        self.bar = Progress(max(0, n_jets - done_jets), desc, unit="jet", enabled=enabled, every_s=0.0)
        self.enabled = self.bar.enabled

    def done(self, n_jets: int) -> None:
        self.chunks += 1
        self.jets += n_jets
        self.new_jets += n_jets
        self.bar.update(n_jets)
        if self.jets >= self.n_jets:
            self.bar.close()
