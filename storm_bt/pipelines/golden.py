"""Golden values for regression backtests: compare measured metrics with stored ones, each with
its own tolerance band, and say what moved in a table a person can read.

A golden file is JSON: ``{"metric": {"value": 1.23, "abs": 1e-6}}`` (an absolute band) or
``{"rel": 1e-3}`` (relative to the golden value). Refreshing rewrites the values and keeps the bands.
Values that only one machine reproduces (a trained model's: CPUs and library builds round
differently, and training amplifies it) carry the machine they were recorded on under ``_machine``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from storm_bt.io import atomic_write_text, machine

__all__ = ["MACHINE_KEY", "Drift", "compare", "diff_table", "recorded_elsewhere", "refresh"]

MACHINE_KEY = "_machine"


@dataclass(frozen=True)
class Drift:
    metric: str
    golden: float | None  # None: no golden value for a measured metric
    got: float | None  # None: a golden metric that was not measured
    tolerance: float

    @property
    def delta(self) -> float:
        return math.nan if self.golden is None or self.got is None else self.got - self.golden


def recorded_elsewhere(path: str | Path) -> str | None:
    """Why the golden values in ``path`` cannot judge this machine (they were recorded on another one, or
    on an unrecorded one), or None when they were recorded here."""
    recorded = json.loads(Path(path).read_text()).get(MACHINE_KEY)
    here = machine()
    return None if recorded == here else f"{Path(path).name} was recorded on {recorded}, this machine is {here}"


def _band(entry: dict) -> float:
    return float(entry["abs"]) if "abs" in entry else abs(float(entry["value"])) * float(entry["rel"])


def compare(measured: dict[str, float], golden: dict[str, dict]) -> list[Drift]:
    """Every metric outside its band, missing on either side, or NaN where the golden is not."""
    drifts = []
    golden = {metric: entry for metric, entry in golden.items() if metric != MACHINE_KEY}
    for metric in sorted(set(measured) | set(golden)):
        entry, got = golden.get(metric), measured.get(metric)
        if entry is None or got is None:
            drifts.append(Drift(metric, entry and entry["value"], got, (entry and _band(entry)) or math.nan))
            continue
        band = _band(entry)
        if not abs(got - float(entry["value"])) <= band:  # also catches NaN
            drifts.append(Drift(metric, float(entry["value"]), got, band))
    return drifts


def diff_table(drifts: list[Drift]) -> str:
    """metric | golden | got | delta | tolerance, one row per drift."""
    header = f"{'metric':<40} {'golden':>14} {'got':>14} {'delta':>12} {'tolerance':>11}"
    rows = [header, "-" * len(header)]
    for d in drifts:
        golden = "missing" if d.golden is None else f"{d.golden:.8g}"
        got = "missing" if d.got is None else f"{d.got:.8g}"
        rows.append(f"{d.metric:<40} {golden:>14} {got:>14} {d.delta:>12.3g} {d.tolerance:>11.3g}")
    return "\n".join(rows)


def refresh(
    path: str | Path, measured: dict[str, float], default_band: dict[str, float], recorded_on: dict | None = None
) -> None:
    """Write the measured values as the new golden ones, keeping each metric's band (or the default);
    ``recorded_on`` (a :func:`storm_bt.io.machine`) binds them to the machine that measured them."""
    path = Path(path)
    old = json.loads(path.read_text()) if path.is_file() else {}
    new = {} if recorded_on is None else {MACHINE_KEY: recorded_on}
    for metric, value in sorted(measured.items()):
        band = {k: v for k, v in old.get(metric, default_band).items() if k in ("abs", "rel")}
        new[metric] = {"value": value, **band}
    atomic_write_text(path, json.dumps(new, indent=2) + "\n")
