"""A pooled training universe: a universe plus the most traded names of a wider one, in the same provider.

A deep model sees 29 DJ30 stocks on about 78k stock-days; pooling the most traded S&P 500 names
gives it several times that history while it is still judged on DJ30 alone (the walk-forward's
``score_universe``). The extra names are ranked by their mean daily traded value (adjusted close x
adjusted volume, which is the raw dollar volume) over the provider's first ``sessions`` sessions: a
window that should lie inside the first fold's train segment, so no choice reads a valid or test day.
A name needs a price on every session of that window to be ranked.

The universe is written as ``instruments/<name>.txt`` (each member's full span, from ``all.txt``)
and recorded in the provider's metadata, in a staging copy under the provider's lock: a failed or
refused write leaves the provider byte-identical.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from storm_bt.data.provider import (
    check_provider,
    is_provider,
    provider_meta,
    read_bin,
    read_calendar,
    read_instruments,
    record_universe,
    write_instruments,
)
from storm_bt.io import exclusive, staged_dir

__all__ = ["mean_traded_value", "pooled_members", "write_pooled_universe"]

log = logging.getLogger(__name__)


def mean_traded_value(qlib_dir: str | Path, instruments: list[str], sessions: int) -> pd.Series:
    """Mean daily close x volume of each instrument over the provider's first ``sessions`` sessions;
    names without a price on every one of them are left out."""
    root = Path(qlib_dir)
    values = {}
    for inst in instruments:
        start, close = read_bin(root, inst, "close")
        _, volume = read_bin(root, inst, "volume")
        if start > 0 or len(close) < sessions:
            continue
        traded = close[:sessions].astype(float) * volume[:sessions].astype(float)
        if np.isfinite(traded).all():
            values[inst] = float(traded.mean())
    return pd.Series(values, dtype=float, name="traded_value")


def pooled_members(qlib_dir: str | Path, keep: str, pool: str, size: int, sessions: int) -> list[str]:
    """Every name of universe ``keep``, then the most traded names of ``pool`` up to ``size`` in all."""
    root = Path(qlib_dir)
    calendar = read_calendar(root)
    if not 1 <= sessions <= len(calendar):
        raise ValueError(f"sessions must be between 1 and the provider's {len(calendar)} sessions, got {sessions}.")
    kept, pooled = (_members(root, name) for name in (keep, pool))
    if size < len(kept):
        raise ValueError(f"size {size} is smaller than universe {keep!r} itself ({len(kept)} names).")
    ranked = mean_traded_value(root, sorted(set(pooled) - set(kept)), sessions).sort_values(ascending=False)
    wanted = size - len(kept)
    if len(ranked) < wanted:
        raise ValueError(
            f"universe {pool!r} has {len(ranked)} names outside {keep!r} with prices on all of the first {sessions} "
            f"sessions ({calendar[0].date()} .. {calendar[sessions - 1].date()}); {wanted} are needed for size {size}."
        )
    return sorted([*kept, *ranked.index[:wanted]])


def write_pooled_universe(
    qlib_dir: str | Path, name: str, keep: str, pool: str, size: int, sessions: int = 252
) -> list[str]:
    """Write universe ``name`` (see :func:`pooled_members`) into the provider and return its members.

    Writing the same members again changes nothing; a different universe under an existing name is
    refused, as it would change what every run on that name trained on.
    """
    if not name or not name.replace("_", "").isalnum() or name == "all":
        raise ValueError(f"Universe name must be alphanumeric (underscores allowed) and not 'all', got {name!r}.")
    root = Path(qlib_dir)
    if not is_provider(root):
        raise FileNotFoundError(f"{root} is not a Qlib provider; build it with `storm-bt data ingest` first.")
    with exclusive(root, "Qlib provider"):
        check_provider(root)
        members = pooled_members(root, keep, pool, size, sessions)
        existing = root / "instruments" / f"{name}.txt"
        if existing.exists():
            stored = sorted(read_instruments(root, name).index)
            if stored == members:
                log.info("Universe %s in %s already holds these %d names; nothing written.", name, root, len(members))
                return members
            raise ValueError(
                f"{existing} already exists with other members ({len(stored)} names); it is left untouched. "
                "Choose another --name."
            )
        with staged_dir(root, copy_existing=True) as stage:
            write_instruments(stage, name, read_instruments(stage, "all").loc[members])
            entry = {
                "benchmark": provider_meta(stage)["universes"].get(keep, {}).get("benchmark"),
                "instruments": len(members),
                "pooled": {"keep": keep, "from": pool, "size": size, "ranked_on_sessions": sessions},
            }
            record_universe(stage, name, entry)
    log.info("Universe %s in %s: %d names, %s and the most traded of %s", name, root, len(members), keep, pool)
    return members


def _members(root: Path, universe: str) -> list[str]:
    path = root / "instruments" / f"{universe}.txt"
    if not path.is_file():
        have = sorted(p.stem for p in (root / "instruments").glob("*.txt"))
        raise ValueError(f"{root} has no universe {universe!r} (instruments/{universe}.txt); it has {have}.")
    return list(read_instruments(root, universe).index.astype(str))
