"""storm_bt.metrics against hand computations and against Qlib's own IC code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from qlib.contrib.eva.alpha import calc_ic

from storm_bt.metrics import daily_rank_ic, max_drawdown, portfolio_metrics, rank_ic_summary


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
