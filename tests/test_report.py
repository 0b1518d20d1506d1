"""``storm-bt report`` on the quickstart run: every figure rendered and embedded."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
from helpers import check_report


def test_report_of_the_quickstart_run_has_rendered_figures(quickstart_run, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "storm_bt.cli", "report", str(quickstart_run), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (stock,) = pd.read_csv(quickstart_run / "trading" / "results.csv")["stock"].unique()
    expected = {"equity_drawdown", "rank_ic", "turnover_holdings", "codebook_usage", "training", f"trading_{stock}"}
    check_report(tmp_path / "report.html", expected)
