"""Independent runs spread over processes or a Ray cluster, each with a fixed thread count.

A :class:`Task` names a module-level function and its arguments; an executor runs a list of
tasks (a local process pool, or Ray) and returns every outcome, so one failed run is reported
by name while the others finish. Threads are part of a task: torch's results depend on them.
"""

from storm_bt.parallel.local import InProcessExecutor, LocalExecutor
from storm_bt.parallel.ray_cluster import RayExecutor
from storm_bt.parallel.tasks import Executor, Outcome, Task, TaskFailures, default_jobs, run_all

__all__ = [
    "Executor",
    "InProcessExecutor",
    "LocalExecutor",
    "Outcome",
    "RayExecutor",
    "Task",
    "TaskFailures",
    "default_jobs",
    "run_all",
]
