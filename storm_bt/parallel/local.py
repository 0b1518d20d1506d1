"""A local process pool: ``jobs`` runs at once, each in a fresh process with its own thread limit."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from storm_bt.parallel.tasks import Outcome, Task, execute, failed_outcome

__all__ = ["InProcessExecutor", "LocalExecutor"]

log = logging.getLogger(__name__)


class LocalExecutor:
    """Runs tasks in up to ``jobs`` spawned processes, a fresh one for every task that asks for it.

    A fresh process per task (``max_tasks_per_child=1``) means no state of one run (Qlib's global
    config, torch's thread pool, mlflow's tracking URI) leaks into the next; when no task asks for one
    (:attr:`Task.fresh_process`), the workers stay warm for the whole list. A process that
    dies (killed, out of memory) breaks the whole pool; the runs it took down with it are run
    again, each alone, so only the run that kills its own process is reported as failed.
    """

    def __init__(self, jobs: int) -> None:
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"--jobs must be a positive whole number, got {jobs!r}.")
        self.jobs = jobs

    def map(self, tasks: Sequence[Task]) -> list[Outcome]:
        outcomes, broken = self._pool(tasks, self.jobs)
        for i in broken:
            (outcomes[i],), _ = self._pool([tasks[i]], 1)
        return outcomes

    @staticmethod
    def _pool(tasks: Sequence[Task], jobs: int) -> tuple[list[Outcome], list[int]]:
        """Outcomes of ``tasks`` on ``jobs`` processes, and the positions lost to a dead process."""
        outcomes: list[Outcome] = [Outcome(t.name, error="not run") for t in tasks]
        broken = []
        context = multiprocessing.get_context("spawn")
        fresh = 1 if any(task.fresh_process for task in tasks) else None
        with ProcessPoolExecutor(jobs, mp_context=context, max_tasks_per_child=fresh) as pool:
            futures = {pool.submit(execute, task): i for i, task in enumerate(tasks)}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    outcomes[i] = future.result()
                except BrokenProcessPool as e:
                    outcomes[i] = Outcome(tasks[i].name, error=f"its worker process died ({e})")
                    broken.append(i)
                    continue
                log.info("%s: %s", tasks[i].name, "done" if outcomes[i].ok else "FAILED")
        return outcomes, sorted(broken) if len(tasks) > 1 else []


class InProcessExecutor:
    """Runs tasks one after another in this process, leaving its thread settings and output alone.

    For short task lists whose runs fix their own threads (the quickstart's trading agents): no
    process start-up, and what the tasks log reaches this process's console.
    """

    def map(self, tasks: Sequence[Task]) -> list[Outcome]:
        outcomes = []
        for task in tasks:
            try:
                outcomes.append(Outcome(task.name, value=task.function(**task.kwargs)))
            except Exception as e:  # reported by name with the others, as by every executor
                outcomes.append(failed_outcome(task, e))
        return outcomes
