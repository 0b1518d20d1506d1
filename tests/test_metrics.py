"""storm_bt.metrics against hand computations and against Qlib's own IC code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from qlib.contrib.eva.alpha import calc_ic

from storm_bt.metrics import (
    daily_rank_ic,
    max_drawdown,
    mean_test,
    newey_west_lags,
    portfolio_metrics,
    rank_ic_summary,
    sharpe_difference_interval,
)


def test_portfolio_metrics_by_hand():
    r = np.array([0.10, -0.20, 0.05, 0.02])
    wealth = np.cumprod(1 + r)  # 1.1, 0.88, 0.924, 0.94248
    m = portfolio_metrics(r)
    assert m["CW"] == pytest.approx(0.94248)
    assert m["APY"] == pytest.approx(0.94248 ** (252 / 4) - 1)
    assert m["MDD"] == pytest.approx(1 - 0.88 / 1.1)
    assert m["AVO"] == pytest.approx(np.std(r, ddof=1) * np.sqrt(252))
    assert m["ASR"] == pytest.approx(np.mean(r) * 252 / m["AVO"])
    assert m["CR"] == pytest.approx(m["APY"] / m["MDD"])
    assert wealth[-1] == pytest.approx(m["CW"])


def test_drawdown_counts_the_start_as_a_peak():
    assert max_drawdown([-0.1, 0.05]) == pytest.approx(0.1)
    assert max_drawdown([0.01, 0.02]) == 0.0


def test_bad_returns_are_rejected():
    with pytest.raises(ValueError, match="at least 2 daily returns"):
        portfolio_metrics([0.1])
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        portfolio_metrics([0.1, np.nan, 0.0])


def test_rank_ic_matches_qlib():
    rng = np.random.default_rng(0)
    index = pd.MultiIndex.from_product(
        [pd.bdate_range("2020-01-01", periods=60), [f"S{i}" for i in range(25)]], names=["datetime", "instrument"]
    )
    label = pd.Series(rng.standard_normal(len(index)), index=index)
    score = 0.2 * label + pd.Series(rng.standard_normal(len(index)), index=index)
    score.iloc[::7] = np.nan
    ours = daily_rank_ic(score, label)
    _, qlib_ric = calc_ic(score, label)
    pd.testing.assert_series_equal(ours, qlib_ric.reindex(ours.index), check_names=False, rtol=1e-10)
    summary = rank_ic_summary(score, label)
    assert summary["RankIC"] == pytest.approx(qlib_ric.mean())
    assert summary["RankICIR"] == pytest.approx(qlib_ric.mean() / qlib_ric.std())
    assert 0.1 < summary["RankIC"] < 0.3


def test_newey_west_se_is_the_iid_se_on_white_noise_and_larger_on_persistent_series():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, 2000)
    iid = noise.std(ddof=1) / np.sqrt(len(noise))
    result = mean_test(noise)
    assert result.lags == newey_west_lags(2000) == 7 and result.n == 2000
    assert result.se == pytest.approx(iid, rel=0.1)
    persistent = np.zeros(2000)
    for i in range(1, 2000):
        persistent[i] = 0.8 * persistent[i - 1] + noise[i]
    naive = persistent.std(ddof=1) / np.sqrt(2000)
    assert mean_test(persistent).se > 1.8 * naive  # the naive error would overstate t
    assert mean_test(persistent, lags=0).se == pytest.approx(naive, rel=0.01)


def test_mean_test_separates_a_real_mean_from_noise():
    rng = np.random.default_rng(1)
    daily_ic = pd.Series(rng.normal(0.03, 0.2, 2300))  # nine years of a 0.03 RankIC, sd 0.2
    assert mean_test(daily_ic).t > 4
    assert abs(mean_test(pd.Series(rng.normal(0.0, 0.2, 2300))).t) < 3
    with_gaps = daily_ic.copy()
    with_gaps.iloc[::10] = np.nan
    assert mean_test(with_gaps).n == 2300 - 230
    with pytest.raises(ValueError, match="at least 3 days"):
        mean_test([0.1, np.nan, 0.2])


def test_sharpe_difference_interval_covers_zero_for_twins_and_not_for_a_better_portfolio():
    rng = np.random.default_rng(2)
    days = pd.bdate_range("2012-01-02", periods=2000)
    market = rng.normal(0.0003, 0.01, len(days))
    a = pd.Series(market + rng.normal(0.0, 0.003, len(days)), index=days)
    b = pd.Series(market + rng.normal(0.0, 0.003, len(days)), index=days)
    diff, low, high = sharpe_difference_interval(a, b, reps=400)
    assert low < 0 < high and low < diff < high
    better = a + 0.0015
    diff, low, high = sharpe_difference_interval(better, b, reps=400)
    assert diff == pytest.approx(portfolio_metrics(better)["ASR"] - portfolio_metrics(b)["ASR"], rel=1e-9)
    assert low > 0
    assert sharpe_difference_interval(better, b, reps=400) == (diff, low, high)  # seeded
    with pytest.raises(ValueError, match="too few"):
        sharpe_difference_interval(a.iloc[:30], b.iloc[:30])
