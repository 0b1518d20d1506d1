"""Interleaved repeats for benchmarks that hold on a busy machine.

A subject and its reference are measured in turns (reference, subject, reference, subject...),
so load that comes and goes falls on both, and every ratio is taken within one round (the arrays
divide elementwise). Scripts print the median of each figure and of each ratio with the range over
rounds as the spread: a wide range says the machine was not quiet, a narrow one that the median holds.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from datetime import date

import numpy as np

from storm_bt.io import machine
from storm_bt.parallel.tasks import default_jobs

__all__ = ["child_run", "interleaved", "machine_line", "spread"]


def interleaved(measures: dict[str, Callable[[], float]], repeats: int) -> dict[str, np.ndarray]:
    """Call every measure once per round, in order, for ``repeats`` rounds; the figures per measure."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}.")
    samples: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(repeats):
        for name, measure in measures.items():
            samples[name].append(measure())
    return {name: np.asarray(values) for name, values in samples.items()}


def spread(values: np.ndarray, fmt: str = ",.0f") -> str:
    """``median [min .. max]`` over the rounds."""
    return f"{np.median(values):{fmt}} [{values.min():{fmt}} .. {values.max():{fmt}}]"


def machine_line(repeats: int) -> str:
    """Where and when the figures come from, for the README."""
    return f"{date.today()}, {machine()['cpu']}, {default_jobs()} cores, {repeats} interleaved rounds"


def child_run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of ``cmd`` run in a child process; a failure ends with its stderr.

    ``os.wait4`` reports this child's own peak (with the grandchildren it waited for), not the
    largest of every child the benchmark started so far."""
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read()  # read before waiting: a full pipe would block the child
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stderr[-3000:]}")
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux
