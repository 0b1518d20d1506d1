"""backtrader as the referee: the Python 3.11 shim, broker mapping and env <-> backtrader parity."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pandas as pd
import pytest

from storm_bt.bridge import ActionSequence, replay
from storm_bt.data.csv_source import read_bars_file
from storm_bt.data.synthetic import SyntheticMarketConfig, make_market
from storm_bt.data.testing import shared_data_dir
from storm_bt.env.rollout import rollout
from storm_bt.env.trading_env import EnvConfig, TradingEnv
from storm_bt.metrics import portfolio_metrics

PAPER_STOCKS = ("AAPL", "JPM", "IBM", "INTC", "MSFT")
PARITY_RTOL = 1e-9


def _adjusted(bars: pd.DataFrame) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    factor = bars["adj_close"] / bars["close"]
    return pd.DatetimeIndex(bars.index), (bars["open"] * factor).to_numpy(), bars["adj_close"].to_numpy()


def _five_stocks() -> dict[str, tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]]:
    """The paper's five stocks over DJ30's whole history, or five synthetic stocks without ../shared/data."""
    shared = shared_data_dir()
    if shared is not None:
        return {s: _adjusted(read_bars_file(shared / "dj30" / f"{s}.csv")) for s in PAPER_STOCKS}
    panel = make_market(SyntheticMarketConfig(n_stocks=5, n_days=1500, seed=3)).panel
    return {name: _adjusted(g.set_index("date")) for name, g in panel.groupby("instrument")}


STOCKS = _five_stocks()
SETTINGS = [
    EnvConfig(fill="next_open", action="discrete"),
    EnvConfig(fill="close", action="discrete"),
    EnvConfig(fill="next_open", action="continuous", commission_bps=3.0, slippage_bps=0.0),
]


@pytest.mark.parametrize("config", SETTINGS, ids=lambda c: f"{c.fill}-{c.action}")
@pytest.mark.parametrize("stock", sorted(STOCKS))
def test_env_and_backtrader_agree_on_every_days_value(stock: str, config: EnvConfig) -> None:
    dates, opens, closes = STOCKS[stock]
    rng = np.random.default_rng(zlib.crc32(f"{stock}-{config.fill}-{config.action}".encode()))
    if config.discrete:
        actions = rng.integers(0, 3, len(dates))
    else:
        actions = rng.uniform(-1, 1, (len(dates), 1)).astype(np.float32)
    features = np.zeros((len(dates), 0), dtype=np.float32)

    episode = rollout(TradingEnv(features, opens, closes, dates, config), ActionSequence(actions))
    referee = replay(ActionSequence(actions), dates, opens, closes, config=config)

    assert len(referee.values) == len(episode.values) == len(dates)
    np.testing.assert_allclose(referee.values.to_numpy(), episode.values.to_numpy(), rtol=PARITY_RTOL, atol=0)
    np.testing.assert_array_equal(referee.records["shares"].to_numpy(), episode.records["shares"].to_numpy())
    assert len(referee.fills) > len(dates) // 4  # random actions trade often: the comparison is not vacuous
    # analyzers report through storm_bt.metrics
    env_metrics = portfolio_metrics(episode.values.pct_change().dropna())
    for name, value in referee.metrics.items():
        assert value == pytest.approx(env_metrics[name], rel=1e-7), name


def test_costs_are_charged_once_per_fill_at_the_slipped_price() -> None:
    dates, opens, closes = STOCKS[sorted(STOCKS)[0]]
    config = EnvConfig(commission_bps=10.0, slippage_bps=5.0)
    actions = [2, 1, 1, 0] * (len(dates) // 4) + [1] * (len(dates) % 4)
    referee = replay(ActionSequence(actions), dates, opens, closes, config=config)
    fills = referee.fills.set_index("date")
    buys, sells = fills[fills["shares"] > 0], fills[fills["shares"] < 0]
    next_open = pd.Series(opens, index=dates).shift(-1)  # decided at t, filled at the open of t+1
    decided = pd.Series(dates[:-1], index=dates[1:])
    np.testing.assert_allclose(buys["price"], next_open[decided[buys.index]].to_numpy() * 1.0005, rtol=1e-12)
    np.testing.assert_allclose(sells["price"], next_open[decided[sells.index]].to_numpy() * 0.9995, rtol=1e-12)
    np.testing.assert_allclose(fills["commission"], fills["shares"].abs() * fills["price"] * 1e-3, rtol=1e-12)


def test_a_policy_sees_the_same_observations_in_both_engines() -> None:
    """A policy that reads features and account state takes the same actions in env and backtrader."""
    dates, opens, closes = STOCKS[sorted(STOCKS)[1]]
    rng = np.random.default_rng(5)
    features = rng.normal(size=(len(dates), 6)).astype(np.float32)
    weights = rng.normal(size=6 + 3).astype(np.float32)
    seen: dict[str, list[np.ndarray]] = {"env": [], "bt": []}

    def policy(engine: str):
        def act(observation: np.ndarray) -> int:
            seen[engine].append(observation)
            score = float(observation @ weights)
            return 2 if score > 0.5 else 0 if score < -0.5 else 1

        return act

    config = EnvConfig()
    episode = rollout(TradingEnv(features, opens, closes, dates, config), policy("env"))
    referee = replay(policy("bt"), dates, opens, closes, features, config)
    np.testing.assert_array_equal(np.stack(seen["bt"]), np.stack(seen["env"]))
    np.testing.assert_allclose(referee.values.to_numpy(), episode.values.to_numpy(), rtol=PARITY_RTOL, atol=0)
    assert {0.0, 1.0, 2.0} <= set(episode.records["action"].dropna())


def test_backtrader_runs_bindlines_on_python_311_only_with_the_shim() -> None:
    """backtrader's bindlines looks up collections.Iterable (gone since Python 3.10)."""
    script = textwrap.dedent(
        """
        import sys
        if sys.argv[1] == "shim":
            import storm_bt.bridge
        import backtrader as bt
        import pandas as pd

        class BoundSMA(bt.Indicator):
            lines = ("sma",)
            def __init__(self):
                bt.ind.SMA(self.data, period=3).bind2lines()

        class Keep(bt.Strategy):
            def __init__(self):
                self.ind = BoundSMA(self.data)
                self.seen = []
            def next(self):
                self.seen.append(self.ind.sma[0])

        closes = [float(i) for i in range(1, 11)]
        frame = pd.DataFrame({"open": closes, "high": closes, "low": closes, "close": closes, "volume": 1.0},
                             index=pd.bdate_range("2020-01-01", periods=10))
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(bt.feeds.PandasData(dataname=frame))
        cerebro.addstrategy(Keep)
        print(cerebro.run()[0].seen)
        """
    )
    plain = subprocess.run([sys.executable, "-c", script, "plain"], capture_output=True, text=True)
    assert plain.returncode != 0 and "Iterable" in plain.stderr  # still broken upstream
    shimmed = subprocess.run([sys.executable, "-c", script, "shim"], capture_output=True, text=True)
    assert shimmed.returncode == 0, shimmed.stderr
    assert eval(shimmed.stdout) == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]  # SMA(3) of 1..10 from bar 3
