"""Wall time and peak memory of ``storm-bt quickstart`` from nothing (fresh run folder), then of a rerun.

    python benchmarks/bench_quickstart.py [--keep DIR]

The quickstart runs in a child process (it starts qrun in a grandchild); peak memory is the
largest resident set among them (``getrusage(RUSAGE_CHILDREN)``). Budget (issue 5): under 15
minutes on 2 cores, offline. The rerun shows what reuse saves.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_quickstart(run_dir: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "storm_bt.cli", "quickstart", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"quickstart failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="run folder to use and keep (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.keep) if args.keep else Path(tmp) / "quickstart"
        fresh = timed_quickstart(run_dir)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        rerun = timed_quickstart(run_dir)
    print(f"quickstart, fresh run folder: {fresh:8.1f} s   (budget 900 s: {fresh / 900:5.1%} of it)")
    print(f"quickstart, rerun (reuses):   {rerun:8.1f} s   ({fresh / rerun:5.1f}x faster than fresh)")
    print(f"peak resident memory:         {peak_mib:8.0f} MiB (largest child process)")


if __name__ == "__main__":
    main()
