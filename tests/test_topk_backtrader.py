"""backtrader's TopK-Drop replays a prediction like Qlib's backtest does: same account every day."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import qlib_features
from qlib.backtest import backtest
from storm_bt.strategies.topk_weekly import WeeklyTopkDropoutStrategy

from storm_bt.agents.states import load_bars
from storm_bt.bridge.portfolio import replay_topk
from storm_bt.data.csv_source import load_csv_dir
from storm_bt.data.provider import write_provider

EXCHANGE = {"freq": "day", "limit_threshold": None, "deal_price": "close", "trade_unit": 1,
            "open_cost": 0.0005, "close_cost": 0.0005, "min_cost": 0}  # fmt: skip


@pytest.fixture(scope="module")
def market(small_market, tmp_path_factory):
    panel = load_csv_dir(small_market[1])
    path = tmp_path_factory.mktemp("topk_bt") / "qlib"
    write_provider(panel, path, "synth")
    names = sorted(panel["instrument"].unique())
    return path, pd.DatetimeIndex(np.sort(panel["date"].unique())), names, load_bars(small_market[1], names)


def _qlib_account(provider, scores, start, end, topk, n_drop, rebalance) -> pd.Series:
    qlib_features(provider, ["SYN000"], ["$close"])  # (re)initialise Qlib on this provider
    strategy = WeeklyTopkDropoutStrategy(topk=topk, n_drop=n_drop, rebalance=rebalance, signal=scores)
    executor = {"class": "SimulatorExecutor", "module_path": "qlib.backtest.executor",
                "kwargs": {"time_per_step": "day", "generate_portfolio_metrics": True, "verbose": False}}  # fmt: skip
    portfolio, _ = backtest(
        start_time=start, end_time=end, strategy=strategy, executor=executor, benchmark="SYNTH_EW",
        account=1_000_000, exchange_kwargs=EXCHANGE,
    )  # fmt: skip
    report, _ = portfolio["1day"]
    return report["account"]


@pytest.mark.parametrize(("topk", "n_drop", "rebalance"), [(4, 2, "weekly"), (3, 1, "daily")])
def test_backtrader_topk_reproduces_qlibs_account(market, topk, n_drop, rebalance) -> None:
    provider, dates, names, bars = market
    index = pd.MultiIndex.from_product([dates, names], names=["datetime", "instrument"])
    scores = pd.Series(np.random.default_rng(topk).standard_normal(len(index)), index=index)
    start, end = dates[100], dates[-2]
    qlib_account = _qlib_account(provider, scores.loc[start:], start, end, topk, n_drop, rebalance)
    replayed = replay_topk(scores.loc[start:], bars, start, end, topk, n_drop, rebalance)
    assert replayed.index.equals(qlib_account.index)
    # Qlib's provider stores float32 prices; the CSV bars are float64: agreement to ~1e-7
    np.testing.assert_allclose(replayed.to_numpy(), qlib_account.to_numpy(), rtol=1e-6)
    assert replayed.pct_change().abs().max() > 0.005  # invested: the comparison is not of two cash accounts
    assert abs(replayed.iloc[-1] / replayed.iloc[0] - 1) > 0.01


def test_replay_needs_the_bars_around_the_window(market) -> None:
    _, dates, names, bars = market
    scores = pd.Series(0.0, index=pd.MultiIndex.from_product([dates, names], names=["datetime", "instrument"]))
    with pytest.raises(ValueError, match="session before"):
        replay_topk(scores, bars, dates[0], dates[50], 3, 1)


def test_backtrader_topk_crosscheck_script_matches_qlib(quickstart_run):
    """The experiments script replays the run's pred.pkl in backtrader; both engines' metrics agree."""
    script = Path(__file__).resolve().parents[1] / "experiments" / "backtrader_topk_crosscheck.py"
    cmd = [sys.executable, str(script), "--run", str(quickstart_run), "--csv-dir", str(quickstart_run / "market")]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    qlib_row = next(line.split()[1:] for line in lines if line.startswith("qlib "))
    backtrader_row = next(line.split()[1:] for line in lines if line.startswith("backtrader "))
    assert qlib_row == backtrader_row  # APY, CW, CR, ASR, MDD, AVO to 4 decimals
    gap = float(next(line for line in lines if "largest relative gap" in line).split(":")[1].split()[0])
    assert gap < 1e-6
