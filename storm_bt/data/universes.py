"""Ticker lists that ship with the package (the universes of the STORM paper)."""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["UNIVERSES", "parse_tickers", "universe_tickers"]

UNIVERSES: tuple[str, ...] = ("dj30", "sp500")
_TICKER = re.compile(r"^[A-Z0-9][A-Z0-9.\-^=]{0,14}$")


def universe_tickers(name: str) -> list[str]:
    """Tickers of a shipped universe: ``dj30`` (29 names, STORM's list) or ``sp500`` (408 names)."""
    if name.lower() not in UNIVERSES:
        raise ValueError(f"Unknown universe {name!r}; shipped universes are {', '.join(UNIVERSES)}.")
    text = resources.files("storm_bt.data").joinpath("universes", f"{name.lower()}.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def parse_tickers(spec: str) -> list[str]:
    """A universe name or a comma-separated ticker list (``AAPL,MSFT``) as a list of tickers."""
    if spec.lower() in UNIVERSES:
        return universe_tickers(spec)
    tickers = [t.strip().upper() for t in spec.split(",") if t.strip()]
    bad = [t for t in tickers if not _TICKER.match(t)]
    if not tickers or bad:
        raise ValueError(
            f"{spec!r} is neither a shipped universe ({', '.join(UNIVERSES)}) nor a comma-separated ticker list"
            + (f"; invalid ticker(s): {', '.join(bad)}" if bad else "")
        )
    return tickers
