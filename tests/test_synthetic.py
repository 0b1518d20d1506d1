"""The synthetic market looks like daily stock data and hides a signal that can be learned."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from storm_bt.data.csv_source import load_csv_dir
from storm_bt.data.synthetic import SyntheticMarketConfig, make_market

CFG = SyntheticMarketConfig(n_stocks=40, n_days=1500, seed=3)


@pytest.fixture(scope="module")
def market():
    return make_market(CFG)


@pytest.fixture(scope="module")
def returns(market) -> pd.DataFrame:
    adj = market.panel.pivot(index="date", columns="instrument", values="adj_close")
    return adj.pct_change().iloc[1:]


def test_same_seed_same_market_and_other_seed_differs():
    a, b = make_market(CFG), make_market(CFG)
    pd.testing.assert_frame_equal(a.panel, b.panel)
    c = make_market(SyntheticMarketConfig(n_stocks=40, n_days=1500, seed=4))
    assert not np.allclose(a.panel["close"], c.panel["close"])


def test_shape_and_calendar(market):
    assert market.panel.shape == (40 * 1500, 8)
    dates = pd.DatetimeIndex(market.panel["date"].unique())
    assert dates[0] == pd.Timestamp("2015-01-02") and dates.is_monotonic_increasing
    assert pd.Timestamp("2015-01-19") not in dates  # Martin Luther King Jr. Day


def test_fat_tails(returns):
    kurtosis = stats.kurtosis(returns.to_numpy().ravel())  # excess kurtosis of a normal is 0
    assert kurtosis > 1.5


def test_volatility_clustering(returns):
    market_ret = returns.mean(axis=1)
    sq = market_ret**2
    assert sq.autocorr(lag=1) > 0.05
    assert abs(market_ret.autocorr(lag=1)) < 0.1  # clustering of size, not of sign


def test_market_factor_and_sectors(market, returns):
    corr = returns.corr().to_numpy()
    sector = market.sectors.reindex(returns.columns).to_numpy()
    same = (sector[:, None] == sector[None, :]) & ~np.eye(len(sector), dtype=bool)
    other = sector[:, None] != sector[None, :]
    assert corr[other].mean() > 0.15  # a common market factor
    assert corr[same].mean() > corr[other].mean() + 0.07  # sectors move together


def test_dividends_make_adj_close_differ(market):
    last = market.panel.groupby("instrument").tail(1)
    np.testing.assert_allclose(last["adj_close"], last["close"])  # Yahoo's convention: equal on the last day
    first = market.panel.groupby("instrument").head(1)
    assert (first["adj_close"] < first["close"] * 0.995).sum() >= 10


def test_planted_signal_predicts_next_returns(market, returns):
    """An oracle that knows z at t ranks next-session returns with a clearly positive RankIC."""
    signal = market.signal.shift(1).loc[returns.index]  # z known at the previous close
    ic = signal.rank(axis=1).corrwith(returns.rank(axis=1), axis=1)
    assert 0.04 < ic.mean() < 0.2
    shuffled = signal.sample(frac=1.0, random_state=0).set_axis(signal.index)
    assert abs(shuffled.rank(axis=1).corrwith(returns.rank(axis=1), axis=1).mean()) < 0.02


def test_signal_is_visible_in_the_bar_shape(market):
    """Where the close sits in the day's range carries z (Alpha158's KSFT2), with noise."""
    p = market.panel
    ksft2 = ((2 * p["close"] - p["high"] - p["low"]) / (p["high"] - p["low"])).to_numpy()
    z = market.signal.stack().reindex(pd.MultiIndex.from_frame(p[["date", "instrument"]])).to_numpy()
    corr = np.corrcoef(ksft2, z)[0, 1]
    assert 0.2 < corr < 0.8


def test_csv_round_trip_passes_validation(small_market):
    market, folder = small_market
    panel = load_csv_dir(folder, min_history=60)
    assert panel.shape == market.panel.shape
    np.testing.assert_allclose(panel["adj_close"], market.panel["adj_close"], rtol=1e-6)


@pytest.mark.parametrize("bad", [{"n_stocks": 1}, {"signal_persistence": 1.0}, {"tail_df": 2.0}, {"n_sectors": 0}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="|".join(bad)):
        SyntheticMarketConfig(**bad)
