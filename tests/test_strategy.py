"""WeeklyTopkDropoutStrategy in Qlib's own backtest: weekly trading, n_drop per week, never above topk."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from helpers import qlib_features
from qlib.backtest import backtest
from storm_bt.strategies.topk_weekly import WeeklyTopkDropoutStrategy

from storm_bt.data.csv_source import load_csv_dir
from storm_bt.data.provider import write_provider

TOPK, N_DROP = 4, 1
SUSPENDED = "SYN003"


@pytest.fixture(scope="module")
def provider(small_market, tmp_path_factory):
    """The small synthetic market with SYN003 suspended (no prices) for 40 sessions from session 100."""
    panel = load_csv_dir(small_market[1])
    dates = np.sort(panel["date"].unique())
    halted = (panel["instrument"] == SUSPENDED) & panel["date"].between(dates[100], dates[139])
    panel.loc[halted, ["open", "high", "low", "close", "adj_close", "volume"]] = np.nan
    path = tmp_path_factory.mktemp("strategy") / "qlib"
    write_provider(panel, path, "synth")
    return path, pd.DatetimeIndex(dates)


def _signal(dates: pd.DatetimeIndex, instruments: list[str], seed: int) -> pd.Series:
    """Random daily scores; SYN003 ranks first until its halt, then last (so every rebalance wants it gone)."""
    rng = np.random.default_rng(seed)
    index = pd.MultiIndex.from_product([dates, instruments], names=["datetime", "instrument"])
    score = pd.Series(rng.standard_normal(len(index)), index=index)
    suspended = index.get_level_values("instrument") == SUSPENDED
    before = index.get_level_values("datetime") < dates[100]
    score[suspended & before] = 10.0
    score[suspended & ~before] = -10.0
    return score


def _run(provider, strategy) -> dict[pd.Timestamp, list[str]]:
    path, dates = provider
    qlib_features(path, [SUSPENDED], ["$close"])  # (re)initialise Qlib on this provider
    portfolio, _ = backtest(
        start_time=dates[70],
        end_time=dates[-2],
        strategy=strategy,
        executor={
            "class": "SimulatorExecutor",
            "module_path": "qlib.backtest.executor",
            "kwargs": {"time_per_step": "day", "generate_portfolio_metrics": True, "verbose": False},
        },
        benchmark="SYNTH_EW",
        account=1_000_000,
        exchange_kwargs={
            "freq": "day",
            "limit_threshold": None,
            "deal_price": "close",
            "trade_unit": 1,
            "open_cost": 0.0005,
            "close_cost": 0.0005,
            "min_cost": 0,
        },
    )
    _, positions = portfolio["1day"]
    return {pd.Timestamp(day): sorted(pos.get_stock_list()) for day, pos in positions.items()}


def _first_sessions_of_week(dates: pd.DatetimeIndex) -> set[pd.Timestamp]:
    weeks = pd.Series(dates, index=dates).groupby([dates.isocalendar().year, dates.isocalendar().week]).min()
    return set(weeks)


@pytest.mark.parametrize("seed", [0, 1])
def test_weekly_strategy_trades_first_session_of_week_within_topk(provider, seed):
    _, dates = provider
    names = [f"SYN{i:03d}" for i in range(12)]
    strategy = WeeklyTopkDropoutStrategy(topk=TOPK, n_drop=N_DROP, signal=_signal(dates, names, seed))
    books = _run(provider, strategy)
    days = sorted(books)
    assert max(len(book) for book in books.values()) == TOPK  # full, never above topk
    first_sessions = _first_sessions_of_week(pd.DatetimeIndex(days))
    changes = [(prev, day) for prev, day in pairwise(days) if books[prev] != books[day]]
    assert len(changes) > 10  # random scores: the book does turn over
    for prev, day in changes:
        assert day in first_sessions, f"traded on {day.date()}, not the first session of its week"
        assert len(set(books[prev]) - set(books[day])) <= N_DROP
    halted = [d for d in days if dates[100] <= d <= dates[139]]
    assert all(SUSPENDED in books[d] for d in halted)  # its sell keeps failing while it is halted...
    assert SUSPENDED not in books[days[-1]]  # ...and goes through once it trades again


def test_qlib_topk_dropout_exceeds_topk_when_sells_fail_and_ours_does_not(provider):
    """Qlib #809 reproduced on the same data: the daily fix holds topk, Qlib's own strategy does not."""
    from qlib.contrib.strategy import TopkDropoutStrategy

    _, dates = provider
    names = [f"SYN{i:03d}" for i in range(12)]
    signal = _signal(dates, names, seed=3)
    qlib_books = _run(provider, TopkDropoutStrategy(topk=TOPK, n_drop=N_DROP, signal=signal))
    ours = _run(provider, WeeklyTopkDropoutStrategy(topk=TOPK, n_drop=N_DROP, rebalance="daily", signal=signal))
    assert max(len(b) for b in qlib_books.values()) > TOPK
    assert max(len(b) for b in ours.values()) == TOPK
    days = sorted(ours)
    assert sum(ours[a] != ours[b] for a, b in pairwise(days)) > len(days) // 3  # daily turnover


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="rebalance"):
        WeeklyTopkDropoutStrategy(topk=5, n_drop=1, rebalance="monthly")
    with pytest.raises(ValueError, match="n_drop"):
        WeeklyTopkDropoutStrategy(topk=5, n_drop=6)
