"""What a run is (:class:`Task`), how its threads are fixed, and how outcomes are gathered."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "THREAD_VARIABLES",
    "Executor",
    "Outcome",
    "Task",
    "TaskFailures",
    "default_jobs",
    "execute",
    "failed_outcome",
    "run_all",
]

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
"""Environment variables that bound the thread pools of torch (OpenMP), MKL, BLAS and numba."""


@dataclass(frozen=True)
class Task:
    """One independent run: ``function(**kwargs)`` in a process limited to ``threads`` threads.

    ``function`` must be importable by name (a module-level function) so that another process,
    or another machine, can run it. ``fresh_process`` asks for a process no other task ran in (a qrun
    leaves Qlib's global config and mlflow's tracking URI behind); a task that resets what it uses
    may share a warm worker and skip the seconds of importing torch and its libraries again.
    """

    name: str
    function: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    threads: int = 1
    log: str | None = None  # the task's stdout and stderr go here (appended), not to the console
    fresh_process: bool = True


@dataclass(frozen=True)
class Outcome:
    """What a task returned, or why it failed (``error`` holds the message and traceback tail)."""

    name: str
    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class TaskFailures(RuntimeError):
    """Some tasks failed; every other task ran to its end. The message names each failure."""

    def __init__(self, failures: Sequence[Outcome], total: int) -> None:
        self.failures = list(failures)
        details = "\n\n".join(f"--- {f.name} ---\n{f.error}" for f in failures)
        super().__init__(f"{len(failures)} of {total} runs failed (the others finished and are kept):\n\n{details}")


class Executor(Protocol):
    """Runs tasks, each in a process of its own, and returns one outcome per task, in order."""

    def map(self, tasks: Sequence[Task]) -> list[Outcome]: ...


def thread_environment(threads: int) -> dict[str, str]:
    """The environment variables that limit every thread pool to ``threads``."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive whole number, got {threads!r}.")
    return dict.fromkeys(THREAD_VARIABLES, str(threads))


def limit_threads(threads: int) -> None:
    """Limit this process (and the processes it starts) to ``threads`` threads."""
    os.environ.update(thread_environment(threads))
    if "torch" in sys.modules:  # already imported: its pool was sized at import
        sys.modules["torch"].set_num_threads(threads)


@contextmanager
def _output_to(log: str | None) -> Iterator[None]:
    """Send this process's stdout and stderr (its children's too) to ``log`` for the block."""
    if log is None:
        yield
        return
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)


def execute(task: Task) -> Outcome:
    """Run ``task`` here, under its thread limit; an exception becomes a failed outcome with the
    end of its traceback and of its log."""
    limit_threads(task.threads)
    try:
        with _output_to(task.log):
            return Outcome(task.name, value=task.function(**task.kwargs))
    except Exception as e:  # reported by name with the others; never lost
        return failed_outcome(task, e)


def failed_outcome(task: Task, error: Exception) -> Outcome:
    """The outcome of a task that raised: the end of its traceback, and of its log if it has one."""
    message = "".join(traceback.format_exception(error)[-6:]).strip()
    if task.log is not None and Path(task.log).is_file():
        tail = Path(task.log).read_text(errors="replace").splitlines()[-15:]
        message += f"\nlast lines of {task.log}:\n" + "\n".join(tail)
    return Outcome(task.name, error=message)


def default_jobs(threads: int = 1) -> int:
    """How many runs keep every core of this machine busy without oversubscribing it."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // threads)


def run_all(executor: Executor, tasks: Sequence[Task]) -> list[Any]:
    """Every task's value, in order; after all have ended, :class:`TaskFailures` if any failed."""
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"Task names must be unique; got {names}.")
    outcomes = executor.map(tasks)
    failures = [o for o in outcomes if not o.ok]
    if failures:
        raise TaskFailures(failures, len(tasks))
    return [o.value for o in outcomes]
