"""Every financial number storm_bt reports, defined once (paper definitions, risk-free rate 0).

Daily simple returns ``r`` over ``n`` sessions, wealth ``V_t = V_0 * prod(1 + r)``:

* CW  = V_T / V_0 (cumulative wealth multiple)
* APY = CW ** (252 / n) - 1 (geometric annualisation)
* AVO = std(r, ddof=1) * sqrt(252)
* ASR = mean(r) * 252 / AVO
* MDD = max over t of 1 - V_t / max_{s <= t} V_s (a positive fraction; V_0 counts as a peak)
* CR  = APY / MDD
* RankIC = mean over dates of the Spearman correlation between score and label across stocks;
  RankICIR = mean / std (ddof=1) of that daily series, not annualised.

Qlib's own figures (arithmetic annualisation over 238 days) are kept beside these, labelled as such.

Significance over a walk-forward history (daily series, so serially correlated):

* :func:`mean_test`: the mean of a daily series (a RankIC series, or the paired difference of two
  models' RankIC on the same dates) with a Newey-West (HAC, Bartlett kernel) standard error and
  its t-stat; lags default to Newey and West's rule floor(4 (n / 100)^(2/9)).
* :func:`sharpe_difference_interval`: a stationary block-bootstrap percentile interval for the
  difference of two portfolios' ASR, resampling the paired days together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from arch.bootstrap import StationaryBootstrap

__all__ = [
    "PORTFOLIO_METRICS",
    "TRADING_DAYS",
    "MeanTest",
    "daily_rank_ic",
    "max_drawdown",
    "mean_test",
    "newey_west_lags",
    "portfolio_metrics",
    "rank_ic_summary",
    "sharpe_difference_interval",
]

TRADING_DAYS = 252
PORTFOLIO_METRICS: tuple[str, ...] = ("APY", "CW", "CR", "ASR", "MDD", "AVO")
"""The paper's portfolio metrics, in the order every table shows them (keys of :func:`portfolio_metrics`)."""


def max_drawdown(returns: pd.Series | np.ndarray) -> float:
    """Largest peak-to-trough fall of wealth, as a positive fraction (0 when wealth never falls)."""
    wealth = np.concatenate([[1.0], np.cumprod(1.0 + np.asarray(returns, dtype=float))])
    return float(np.max(1.0 - wealth / np.maximum.accumulate(wealth)))


def portfolio_metrics(returns: pd.Series | np.ndarray) -> dict[str, float]:
    """APY, CW, CR, ASR, MDD and AVO of a daily return series (see the module docstring)."""
    r = np.asarray(returns, dtype=float)
    if r.ndim != 1 or len(r) < 2:
        raise ValueError(f"Expected a 1-D series of at least 2 daily returns, got shape {r.shape}.")
    if not np.isfinite(r).all():
        raise ValueError(f"Returns contain {int((~np.isfinite(r)).sum())} NaN or infinite values.")
    cw = float(np.prod(1.0 + r))
    apy = cw ** (TRADING_DAYS / len(r)) - 1.0
    avo = float(np.std(r, ddof=1) * np.sqrt(TRADING_DAYS))
    mdd = max_drawdown(r)
    return {
        "APY": apy,
        "CW": cw,
        "CR": apy / mdd if mdd > 0 else float("inf"),
        "ASR": float(np.mean(r) * TRADING_DAYS / avo) if avo > 0 else float("nan"),
        "MDD": mdd,
        "AVO": avo,
    }


def daily_rank_ic(score: pd.Series, label: pd.Series) -> pd.Series:
    """Spearman correlation of ``score`` and ``label`` across instruments, one value per date.

    Both series are indexed by (datetime, instrument); rows where either is NaN are dropped, and
    dates with fewer than 2 stocks or a constant score or label give NaN.
    """
    frame = pd.concat({"score": score, "label": label}, axis=1, join="inner").dropna()
    level = frame.index.names.index("datetime") if "datetime" in frame.index.names else 0
    ranks = frame.groupby(level=level).rank()
    return ranks.groupby(level=level).apply(lambda g: g["score"].corr(g["label"])).rename("rank_ic")


def rank_ic_summary(score: pd.Series, label: pd.Series) -> dict[str, float]:
    """RankIC (mean of the daily series) and RankICIR (mean / std, not annualised)."""
    daily = daily_rank_ic(score, label).dropna()
    std = float(daily.std(ddof=1))
    return {"RankIC": float(daily.mean()), "RankICIR": float(daily.mean() / std) if std > 0 else float("nan")}


def newey_west_lags(n: int) -> int:
    """Newey and West's (1994) rule of thumb for the Bartlett-kernel lag length: floor(4 (n / 100)^(2/9))."""
    return int(np.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)))


@dataclass(frozen=True)
class MeanTest:
    """The mean of a daily series with its HAC standard error; ``t = mean / se``."""

    mean: float
    se: float
    t: float
    n: int  # days with a value
    lags: int


def mean_test(series: pd.Series | np.ndarray, lags: int | None = None) -> MeanTest:
    """Mean of ``series`` (NaN days dropped) with a Newey-West standard error (statsmodels OLS on a constant, HAC).

    :param lags: Bartlett-kernel lags; default :func:`newey_west_lags` of the number of days.
    """
    values = np.asarray(pd.Series(series).dropna(), dtype=float)
    n = len(values)
    if n < 3:
        raise ValueError(f"A mean test needs at least 3 days with a value, got {n}.")
    lags = newey_west_lags(n) if lags is None else lags
    fit = sm.OLS(values, np.ones(n)).fit(cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": True})
    mean, se = float(fit.params[0]), float(fit.bse[0])
    return MeanTest(mean, se, mean / se if se > 0 else float("nan"), n, lags)


def _asr(returns: np.ndarray) -> float:
    std = np.std(returns, ddof=1)
    return float(np.mean(returns) * np.sqrt(TRADING_DAYS) / std) if std > 0 else float("nan")


def sharpe_difference_interval(
    returns_a: pd.Series,
    returns_b: pd.Series,
    block: int = 20,
    reps: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """ASR(a) - ASR(b) on their common days, and its stationary block-bootstrap percentile interval.

    Days are resampled in pairs (both portfolios saw the same market), in blocks of mean length
    ``block`` sessions, so serial correlation and the portfolios' co-movement are kept.

    :returns: (difference, lower, upper).
    """
    paired = pd.concat({"a": returns_a, "b": returns_b}, axis=1, join="inner").dropna()
    if len(paired) < 2 * block:
        raise ValueError(f"{len(paired)} common days are too few for a block bootstrap with blocks of {block}.")
    a, b = paired["a"].to_numpy(float), paired["b"].to_numpy(float)

    def difference(x: np.ndarray, y: np.ndarray) -> float:
        return _asr(x) - _asr(y)

    bootstrap = StationaryBootstrap(block, a, b, seed=np.random.default_rng(seed))
    low, high = bootstrap.conf_int(difference, reps=reps, method="percentile", size=level).ravel()
    return difference(a, b), float(low), float(high)
