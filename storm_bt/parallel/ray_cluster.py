"""Runs on a Ray cluster: a head on one machine, workers on others, a fresh worker per run that asks for one.

Every node needs this package installed and must see the run folders (shared storage): a task
writes its results where its arguments say, exactly as it would locally, so a finished run is
reused whoever ran it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from storm_bt.parallel.tasks import Outcome, Task, execute

__all__ = ["RayExecutor"]

log = logging.getLogger(__name__)


class RayExecutor:
    """Submits every task to the Ray cluster at ``address`` with ``threads`` CPUs reserved for it.

    A worker that dies mid-run (a killed process, a lost node) is retried up to ``retries`` times
    by Ray; a run whose attempts all died is reported as failed. Runs never reuse half-written
    output: each task writes atomically or behind a done-marker.
    """

    def __init__(self, address: str, retries: int = 1) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a whole number >= 0, got {retries!r}.")
        self.address = address
        self.retries = retries

    def map(self, tasks: Sequence[Task]) -> list[Outcome]:
        import ray  # 2 s to import: only when a Ray cluster is asked for

        ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False)
        fresh, warm = ray.remote(max_calls=1)(execute), ray.remote(execute)  # max_calls=1: a new worker per run
        refs = [
            (fresh if t.fresh_process else warm)
            .options(num_cpus=t.threads, max_retries=self.retries, name=t.name)
            .remote(t)
            for t in tasks
        ]
        outcomes = []
        for task, ref in zip(tasks, refs, strict=True):
            try:
                outcomes.append(ray.get(ref))
            except ray.exceptions.RayError as e:  # the worker or its node died on every attempt
                outcomes.append(Outcome(task.name, error=f"Ray gave up after {self.retries + 1} attempt(s): {e}"))
            log.info("%s: %s", task.name, "done" if outcomes[-1].ok else "FAILED")
        return outcomes
