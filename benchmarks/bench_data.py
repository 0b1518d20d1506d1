"""SP500 ingest: wall time and peak memory of ``storm-bt data ingest``, and Qlib read-back exactness.

Targets (issue 2): under 2 minutes and under 4 GB for the 408-stock SP500 set. The reference
measured in the same run is a plain ``pandas.read_csv`` of every file (the I/O floor), so the
ratio says what validation, calendar alignment and the binary writer cost on top of reading.

    python benchmarks/bench_data.py [--csv-dir DIR] [--no-verify]

Without ``--csv-dir`` it uses ``../shared/data/sp500`` when present, else a synthetic market of the
same size (408 stocks x 4013 sessions).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from storm_bt.data.testing import shared_data_dir

READ_ALL = """
import sys, pandas as pd
from pathlib import Path
frames = [pd.read_csv(p) for p in sorted(Path(sys.argv[1]).iterdir()) if p.name.endswith(('.csv', '.csv.gz'))]
print(sum(len(f) for f in frames))
"""


def _timed_child(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a child process."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # ru_maxrss is in KB on Linux
    return seconds, peak_mb


def _synthetic_sp500(folder: Path) -> Path:
    from storm_bt.data.synthetic import SyntheticMarketConfig, write_market_csvs

    write_market_csvs(
        SyntheticMarketConfig(n_stocks=408, n_days=4013, seed=0, start="2008-04-01", n_sectors=11), folder
    )
    return folder


def _verify(csv_dir: Path, qlib_dir: Path) -> int:
    """Mismatches between Qlib's read-back of the adjusted close and the CSV's adj_close (as float32)."""
    import qlib
    from qlib.data import D

    from storm_bt.data.csv_source import load_csv_dir

    panel = load_csv_dir(csv_dir)
    qlib.init(provider_uri=str(qlib_dir), region="us")
    got = D.features(sorted(panel["instrument"].unique()), ["$close"], freq="day")["$close"]
    expected = panel.set_index(["instrument", "date"])["adj_close"].astype(np.float32)
    got = got.reindex(expected.index.set_names(["instrument", "datetime"])).to_numpy(np.float32)
    return int((got != expected.to_numpy()).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv-dir", type=Path)
    parser.add_argument("--no-verify", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shared = shared_data_dir()
        csv_dir = args.csv_dir or (shared / "sp500" if shared else _synthetic_sp500(Path(tmp) / "csv"))
        n_files = sum(1 for p in csv_dir.iterdir() if p.name.endswith((".csv", ".csv.gz")))
        read_s, read_mb = _timed_child([sys.executable, "-c", READ_ALL, str(csv_dir)])
        qlib_dir = Path(tmp) / "qlib"
        cmd = [
            sys.executable,
            "-m",
            "storm_bt.cli",
            "data",
            "ingest",
            "--csv-dir",
            str(csv_dir),
            "--qlib-dir",
            str(qlib_dir),
            "--universe",
            "sp500",
            "--on-gap",
            "raise",
        ]
        ingest_s, ingest_mb = _timed_child(cmd)
        print(f"source: {csv_dir} ({n_files} files)")
        print(f"{'step':<34}{'seconds':>10}{'peak MB':>10}")
        print(f"{'pandas.read_csv of every file':<34}{read_s:>10.1f}{read_mb:>10.0f}")
        print(f"{'storm-bt data ingest':<34}{ingest_s:>10.1f}{ingest_mb:>10.0f}")
        print(f"ingest / read ratio: {ingest_s / read_s:.1f}x   targets: < 120 s, < 4096 MB")
        if not args.no_verify:
            print(f"Qlib read-back mismatches of $close: {_verify(csv_dir, qlib_dir)}")


if __name__ == "__main__":
    main()
