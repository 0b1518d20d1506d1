"""Significance of a walk-forward history: each model's RankIC against zero, and against a baseline.

Daily RankIC and daily portfolio returns are serially correlated, so the mean tests use
Newey-West (HAC) standard errors and the Sharpe difference a paired stationary block bootstrap
(:mod:`storm_bt.metrics`). A model's row is paired with the baseline's row of the same seed (or
ensemble), on the days both have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from statsmodels.stats.weightstats import DescrStatsW

from storm_bt.metrics import daily_rank_ic, mean_test, newey_west_lags, sharpe_difference_interval
from storm_bt.workflows.qrun import kept_valid_rank_ic
from storm_bt.workflows.runs import load_artifacts

__all__ = [
    "BOOTSTRAP",
    "ENSEMBLE",
    "SIGNIFICANCE_COLUMNS",
    "SpanSeries",
    "compare",
    "kept_valid",
    "method_note",
    "read_rank_ic",
    "read_span_series",
    "replicate_t",
    "valid_difference",
]

ENSEMBLE = "ensemble"
"""The seed of a row that is the seed ensemble's span."""

BOOTSTRAP = {"block": 20, "reps": 2000, "level": 0.95, "seed": 0}
"""Stationary bootstrap of the Sharpe difference: mean block length (sessions), resamples, level, seed."""

SIGNIFICANCE_COLUMNS = (
    "RankIC.t",
    "RankIC.days",
    "RankIC.lags",
    "diff.RankIC",
    "diff.RankIC.t",
    "diff.ASR",
    "diff.ASR.low",
    "diff.ASR.high",
)

REPORT = "portfolio_analysis/report_normal_1day.pkl"


@dataclass(frozen=True)
class SpanSeries:
    """The daily series a walk-forward span is judged on."""

    rank_ic: pd.Series  # Spearman correlation of score and label across stocks, per day
    net_returns: pd.Series  # the TopK-Drop portfolio's daily return net of costs


def read_rank_ic(run_dir: str | Path) -> pd.Series:
    """Daily RankIC of the predictions a qrun run recorded (a fold run, or a span), on its label."""
    _, art = load_artifacts(run_dir, ("pred.pkl", "label.pkl"))
    return _recorded_rank_ic(art)


def read_span_series(span_dir: str | Path) -> SpanSeries:
    """Daily RankIC and net portfolio returns of an analysed span (read from its mlflow store)."""
    _, art = load_artifacts(span_dir, ("pred.pkl", "label.pkl", REPORT))
    report = art[REPORT]
    return SpanSeries(_recorded_rank_ic(art), report["return"] - report["cost"])


def _recorded_rank_ic(artifacts: dict[str, pd.DataFrame]) -> pd.Series:
    return daily_rank_ic(artifacts["pred.pkl"].iloc[:, 0], artifacts["label.pkl"].iloc[:, 0]).dropna()


def compare(model: SpanSeries, baseline: SpanSeries | None) -> dict[str, float]:
    """The model's RankIC t-stat, and (against a baseline) the paired RankIC and Sharpe differences."""
    own = mean_test(model.rank_ic)
    out = dict.fromkeys(SIGNIFICANCE_COLUMNS, np.nan) | {
        "RankIC.t": own.t,
        "RankIC.days": float(own.n),
        "RankIC.lags": float(own.lags),
    }
    if baseline is None:
        return out
    paired = pd.concat({"m": model.rank_ic, "b": baseline.rank_ic}, axis=1, join="inner")
    difference = mean_test(paired["m"] - paired["b"])
    out |= {"diff.RankIC": difference.mean, "diff.RankIC.t": difference.t}
    common = model.net_returns.index.intersection(baseline.net_returns.index)
    if len(common) < 2 * BOOTSTRAP["block"]:  # a screening span too short for blocks: no interval
        return out
    asr, low, high = sharpe_difference_interval(model.net_returns, baseline.net_returns, **BOOTSTRAP)
    return out | {"diff.ASR": asr, "diff.ASR.low": low, "diff.ASR.high": high}


def replicate_t(values: pd.Series) -> float:
    """One-sample t against zero of values from independent replicates: seeds, or folds (n - 1 degrees
    of freedom).

    A span's Newey-West t measures the days' noise given the trained networks; retraining with
    another seed moves a network's Rank IC by about as much, and only the spread over seeds sees
    that. NaN under two values or with no spread.
    """
    values = pd.Series(values, dtype=float).dropna().to_numpy()
    if len(values) < 2 or np.ptp(values) == 0:
        return float("nan")
    return float(DescrStatsW(values).ttest_mean(0.0)[0])


def kept_valid(runs: Mapping[tuple[int | str, int], Path]) -> pd.Series:
    """The valid Rank IC each run kept (NaN for models without one), indexed by (seed, fold): what
    :func:`valid_difference` pairs."""
    index = pd.MultiIndex.from_tuples(list(runs), names=["seed", "fold"])
    return pd.Series([kept_valid_rank_ic(run_dir) for run_dir in runs.values()], index=index, dtype=float)


def valid_difference(model: pd.Series, baseline: pd.Series) -> dict[str, float]:
    """The kept valid Rank IC against the baseline's run of the same seed and fold: the mean difference,
    and its t over folds. Every seed of a fold validates on the same year, so a fold's differences are
    averaged over its seeds first and the folds are the replicates: does the valid year prefer the model,
    which is how a change would be chosen on valid folds.

    :param model: kept valid Rank IC indexed by (seed, fold); ``baseline`` likewise.
    """
    paired = (model - baseline).dropna()
    per_fold = paired.groupby(level="fold").mean()
    return {"diff.valid.RankIC": float(per_fold.mean()), "diff.valid.RankIC.t": replicate_t(per_fold)}


def method_note(days: int, baseline: str) -> str:
    """The sentence a table states its tests with."""
    b = BOOTSTRAP
    return (
        f"t = mean / Newey-West (HAC, Bartlett kernel) standard error of the daily series, "
        f"{newey_west_lags(days)} lags for {days} days (floor(4 (T/100)^(2/9))); |t| > 1.96 is significant "
        f"at 5% (two-sided). Δ = model - {baseline} on the same days: seed k against {baseline}'s seed k, "
        f"ensemble against its ensemble. t over seeds: one-sample t of the seeds' Δ Rank IC (n - 1 degrees "
        "of freedom), which sees the training's noise that a span's t does not. Δ valid: the kept valid Rank IC "
        f"against {baseline}'s run of the same seed and fold; t over folds: one-sample t of the folds' mean Δ "
        "valid (a fold's seeds validate on the same year). "
        f"Δ ASR interval: {b['level']:.0%} percentile interval of a paired "
        f"stationary block bootstrap (mean block {b['block']} sessions, {b['reps']} resamples, seed {b['seed']})."
    )
