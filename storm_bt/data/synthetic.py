"""A seeded synthetic stock market that looks like real daily data and hides a learnable signal.

Why: every stage (Qlib provider, Alpha158, STORM, the trading env) must be testable offline, and
a test must be able to tell a model that learns from one that does not. The market has

* a market factor and sector factors with GARCH(1,1) volatility clustering,
* Student-t shocks (fat tails) and heterogeneous betas and idiosyncratic volatilities,
* quarterly dividends, so ``adj_close`` differs from ``close`` as in Yahoo data,
* a planted signal: a persistent latent score ``z`` per stock that shifts the next sessions'
  expected return and shows in the shape of today's bar (where the close sits in the high-low
  range), so it can be read from OHLC features such as Alpha158's KSFT2/KLOW2/KUP2 only with noise.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from storm_bt.data.calendar import nyse_sessions
from storm_bt.data.schema import BAR_COLUMNS, PANEL_COLUMNS
from storm_bt.io import atomic_write_text

__all__ = ["SyntheticMarket", "SyntheticMarketConfig", "make_market", "write_market_csvs"]


@dataclass(frozen=True)
class SyntheticMarketConfig:
    """Parameters of the synthetic market; the defaults give a DJ30-sized panel."""

    n_stocks: int = 30
    n_days: int = 750
    seed: int = 0
    start: str = "2015-01-02"  # first calendar day; the panel starts at the first NYSE session on or after it
    n_sectors: int = 5
    signal_strength: float = 0.1  # expected-return shift per unit of z, in units of idiosyncratic volatility
    signal_persistence: float = 0.8  # AR(1) coefficient of z: how many sessions the signal keeps paying
    signal_visibility: float = 1.5  # how strongly z moves the close inside the day's range (noise has scale 1)
    tail_df: float = 4.0  # Student-t degrees of freedom of every shock (lower = fatter tails)
    market_vol: float = 0.011  # daily volatility of the market factor
    dividend_yield: float = 0.02  # annual yield of dividend payers, paid quarterly

    def __post_init__(self) -> None:
        if self.n_stocks < 2 or self.n_days < 2:
            raise ValueError(f"Need at least 2 stocks and 2 days, got n_stocks={self.n_stocks}, n_days={self.n_days}.")
        if not 0 <= self.signal_persistence < 1:
            raise ValueError(f"signal_persistence must be in [0, 1), got {self.signal_persistence}.")
        if self.tail_df <= 2:
            raise ValueError(f"tail_df must exceed 2 for a finite variance, got {self.tail_df}.")
        if not 1 <= self.n_sectors <= self.n_stocks:
            raise ValueError(f"n_sectors must be in [1, n_stocks], got {self.n_sectors}.")


class SyntheticMarket(NamedTuple):
    """A generated market: the panel plus the hidden truth that tests can check models against."""

    panel: pd.DataFrame  # long panel with PANEL_COLUMNS
    signal: pd.DataFrame  # (sessions x tickers) latent z known at each session's close
    sectors: pd.Series  # ticker -> sector id


def _student_t(rng: np.random.Generator, df: float, shape: tuple[int, ...]) -> np.ndarray:
    """Unit-variance Student-t draws."""
    return rng.standard_t(df, size=shape) * np.sqrt((df - 2) / df)


def _garch_paths(rng: np.random.Generator, vol: np.ndarray, n_days: int, df: float) -> np.ndarray:
    """Shocks with GARCH(1,1) variance targeting ``vol`` per column; returns (n_days, len(vol))."""
    alpha, beta = 0.08, 0.9
    target = vol**2
    omega = target * (1 - alpha - beta)
    shocks = _student_t(rng, df, (n_days, len(vol)))
    out = np.empty_like(shocks)
    var = target.copy()
    for t in range(n_days):
        out[t] = np.sqrt(var) * shocks[t]
        var = omega + alpha * out[t] ** 2 + beta * var
    return out


def _returns(cfg: SyntheticMarketConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Daily total returns (T, N), the latent signal z (T, N) and sector ids (N,)."""
    n, t = cfg.n_stocks, cfg.n_days
    sectors = rng.permutation(np.arange(n) % cfg.n_sectors)
    market = _garch_paths(rng, np.array([cfg.market_vol]), t, cfg.tail_df)[:, 0]
    sector_ret = _garch_paths(rng, np.full(cfg.n_sectors, 0.7 * cfg.market_vol), t, cfg.tail_df)
    idio_vol = rng.uniform(0.009, 0.022, n)
    idio = _garch_paths(rng, idio_vol, t, cfg.tail_df)
    beta, loading = rng.uniform(0.6, 1.4, n), rng.uniform(0.5, 1.0, n)

    phi = cfg.signal_persistence
    z = np.empty((t, n))
    z[0] = rng.standard_normal(n)
    innov = rng.standard_normal((t, n)) * np.sqrt(1 - phi**2)
    for k in range(1, t):
        z[k] = phi * z[k - 1] + innov[k]
    drift = np.zeros((t, n))
    drift[1:] = cfg.signal_strength * idio_vol * z[:-1]  # known at the previous close, paid today
    log_ret = 0.0002 + beta * market[:, None] + loading * sector_ret[:, sectors] + drift + idio
    return np.expm1(log_ret), z, sectors


def _bars(
    cfg: SyntheticMarketConfig, rng: np.random.Generator, ret: np.ndarray, z: np.ndarray
) -> dict[str, np.ndarray]:
    """Raw OHLCV with dividends, and Yahoo-style ``adj_close`` (equal to close on the last day)."""
    t, n = ret.shape
    payer = rng.random(n) < 0.6
    phase = rng.integers(0, 63, n)
    ex_date = ((np.arange(t)[:, None] - phase) % 63 == 0) & payer & (np.arange(t)[:, None] > 0)
    div_rate = np.where(ex_date, cfg.dividend_yield / 4, 0.0)

    close = np.empty((t, n))
    prev = np.exp(rng.normal(np.log(60), 0.8, n))
    gap_share = 0.3
    opens = np.empty((t, n))
    for k in range(t):
        base = prev * (1 - div_rate[k])  # the ex-dividend reference price
        close[k] = base * (1 + ret[k])
        opens[k] = base * (1 + ret[k]) ** gap_share * np.exp(rng.normal(0, 0.002, n))
        prev = close[k]

    # Wicks: the day's extra range is split between the upper and lower wick; a high z puts the
    # close near the high (small upper wick), which is how the signal becomes visible.
    extra = np.abs(np.log(close / opens)) * 0.5 + np.abs(rng.normal(0, 0.008, (t, n)))
    up_share = 1 / (1 + np.exp(cfg.signal_visibility * z + rng.standard_normal((t, n))))
    high = np.maximum(opens, close) * np.exp(extra * up_share)
    low = np.minimum(opens, close) * np.exp(-extra * (1 - up_share))

    surprise = np.abs(ret - ret.mean(axis=1, keepdims=True)) / ret.std(axis=0, keepdims=True)
    base_volume = np.exp(rng.normal(np.log(3e6), 1.0, n))
    volume = np.round(base_volume * np.exp(0.4 * surprise + rng.normal(0, 0.3, (t, n)))) + 100

    factor = np.cumprod((1 - div_rate)[::-1], axis=0)[::-1]  # product of (1 - d) over ex-dates > t
    factor = np.vstack([factor[1:], np.ones((1, n))])
    rnd = {k: np.round(v, 6) for k, v in {"open": opens, "close": close, "high": high, "low": low}.items()}
    rnd["high"] = np.maximum.reduce([rnd["high"], rnd["open"], rnd["close"]])
    rnd["low"] = np.minimum.reduce([rnd["low"], rnd["open"], rnd["close"]])
    rnd["adj_close"] = np.round(rnd["close"] * factor, 6)
    rnd["volume"] = volume
    return rnd


def make_market(config: SyntheticMarketConfig) -> SyntheticMarket:
    """Generate the market described by ``config``; the same config always gives the same market."""
    rng = np.random.default_rng(config.seed)
    start = pd.Timestamp(config.start)
    sessions = nyse_sessions(start, start + pd.Timedelta(days=int(config.n_days * 1.5) + 30))[: config.n_days]
    if len(sessions) < config.n_days:
        raise ValueError(f"Calendar too short for n_days={config.n_days} from {config.start}.")
    ret, z, sectors = _returns(config, rng)
    bars = _bars(config, rng, ret, z)
    tickers = [f"SYN{i:03d}" for i in range(config.n_stocks)]
    panel = pd.DataFrame(
        {
            "date": np.repeat(sessions.to_numpy(), config.n_stocks),
            "instrument": np.tile(tickers, config.n_days),
            **{field: bars[field].ravel() for field in BAR_COLUMNS[1:]},
        }
    )
    panel = panel.sort_values(["instrument", "date"], ignore_index=True)[list(PANEL_COLUMNS)]
    signal = pd.DataFrame(z, index=sessions, columns=tickers)
    return SyntheticMarket(panel, signal, pd.Series(sectors, index=tickers, name="sector"))


def write_market_csvs(config: SyntheticMarketConfig, out_dir: str | Path) -> SyntheticMarket:
    """Write one ``<TICKER>.csv`` per stock (the ``../shared/data`` format) plus ``_market.json``."""
    market = make_market(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for ticker, bars in market.panel.groupby("instrument", sort=True):
        frame = bars[list(BAR_COLUMNS)].assign(
            date=bars["date"].dt.strftime("%Y-%m-%d"), volume=bars["volume"].astype(np.int64)
        )
        atomic_write_text(out / f"{ticker}.csv", frame.to_csv(index=False, float_format="%.6f"))
    meta = {"config": asdict(config), "sectors": market.sectors.to_dict()}
    atomic_write_text(out / "_market.json", json.dumps(meta, indent=2, sort_keys=True))
    return market
