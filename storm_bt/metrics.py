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
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "PORTFOLIO_METRICS",
    "TRADING_DAYS",
    "daily_rank_ic",
    "max_drawdown",
    "portfolio_metrics",
    "rank_ic_summary",
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
