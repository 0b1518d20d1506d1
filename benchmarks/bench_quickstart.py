"""Wall time and peak memory of ``storm-bt quickstart`` from nothing (fresh run folder), then of a rerun.

    python benchmarks/bench_quickstart.py [--repeats 2] [--keep DIR]

The quickstart runs in a child process (it starts qrun in a grandchild); its peak memory is the
largest resident set among them (``os.wait4``). Each round runs it fresh in a new folder, then
again in that folder (interleaved, ``benchmarks/timing.py``). Budget (issue 5): under 15 minutes on
2 cores, offline. The rerun shows what reuse saves.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from timing import child_run, interleaved, machine_line, spread


def timed_quickstart(run_dir: Path, peaks: list[float]) -> float:
    """Wall seconds of one quickstart in ``run_dir``; its peak resident MiB goes to ``peaks``."""
    seconds, peak = child_run([sys.executable, "-m", "storm_bt.cli", "quickstart", "--run-dir", str(run_dir)])
    peaks.append(peak)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="folder to keep the run folders in (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        runs: list[Path] = []
        peaks: dict[str, list[float]] = {"fresh": [], "rerun": []}

        def fresh() -> float:
            runs.append(root / f"quickstart{len(runs)}")
            return timed_quickstart(runs[-1], peaks["fresh"])

        def rerun() -> float:
            return timed_quickstart(runs[-1], peaks["rerun"])

        seconds = interleaved({"fresh": fresh, "rerun": rerun}, args.repeats)
    print(f"{machine_line(args.repeats)}; median [min .. max]")
    print(f"quickstart, fresh run folder: {spread(seconds['fresh'], '.1f')} s (budget 900 s)")
    print(f"quickstart, rerun (reuses):   {spread(seconds['rerun'], '.1f')} s, "
          f"{spread(seconds['fresh'] / seconds['rerun'], '.1f')}x faster than fresh")  # fmt: skip
    print(f"peak resident memory (fresh): {spread(np.asarray(peaks['fresh']))} MiB")


if __name__ == "__main__":
    main()
