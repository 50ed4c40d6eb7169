"""Ray tasks as the executor of chunked data work (`sweeper data make --address`): one CPU per
task, on the cluster at `address` ("auto": the cluster this process runs in). The data layer
runs tasks through `data.tasks.run_tasks(..., executor=RayTasks(address))` and never imports Ray."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from scaling_sweeper.cluster.connection import init_ray, shutdown_ray
from scaling_sweeper.data.tasks import call_task


class RayTasks:
    """A data.tasks.TaskExecutor: each task a Ray task (num_cpus=1, max_retries=2). Connects (and
    disconnects afterwards) unless Ray is already initialised in this process. An open cluster
    (no auth token required) is refused unless `insecure`; `connect()` lets the command line
    refuse it before anything is written."""

    def __init__(self, address: str, *, insecure: bool = False):
        self.address = address
        self.insecure = insecure
        self._connected = False  # this executor initialised Ray (and shuts it down after map)

    def connect(self) -> None:
        """Join the cluster now unless Ray is initialised in this process already
        (InsecureClusterError for an open cluster without `insecure`)."""
        import ray

        if ray.is_initialized():
            return
        init_ray(None if self.address == "auto" and os.environ.get("RAY_ADDRESS") else self.address,
                 insecure=self.insecure)
        self._connected = True

    def map(self, fn: Callable, tasks: Sequence[Any], on_done: Callable[[int, Any], None] | None = None) -> list:
        import ray

        self.connect()
        try:
            remote = ray.remote(num_cpus=1, max_retries=2)(call_task)
            refs = {remote.remote((fn, t)): i for i, t in enumerate(tasks)}
            results: list = [None] * len(tasks)
            pending, error = list(refs), None
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    try:
                        results[refs[ref]] = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        error = error or e.as_instanceof_cause()
                        continue
                    if on_done:
                        on_done(refs[ref], results[refs[ref]])
            if error is not None:
                raise error
            return results
        finally:
            if self._connected:
                self._connected = False
                shutdown_ray()
