"""Write (and incrementally extend) a Qlib binary data provider from a validated panel.

Qlib's ``dump_bin.py`` is not in the pip package, so the format is written here:

* ``calendars/day.txt``: one NYSE session per line;
* ``instruments/all.txt`` and ``instruments/<universe>.txt``: ``SYMBOL<TAB>first<TAB>last``;
* ``features/<symbol>/<field>.day.bin``: little-endian float32, the first value being the index
  of the instrument's first session in the calendar, then one value per session.

Prices are split- and dividend-adjusted (raw x ``factor``, ``factor = adj_close / close``),
volume is divided by the factor (so price x volume stays the traded value), ``vwap`` is
estimated as the adjusted typical price (high + low + close) / 3 because Yahoo has no VWAP, and
``change`` is the adjusted close-to-close return that Qlib's exchange reads. A benchmark
instrument ``<UNIVERSE>_EW`` (equal-weight total-return index of the universe) is written beside
the stocks unless a real index series is given.

An existing provider is extended in place of being rebuilt: only sessions after an instrument's
last stored day are appended, rescaled so that the adjusted prices continue the stored series.
Every write happens in a staging copy that replaces the provider only when all of it succeeded,
under the provider's lock; a folder that is not a provider is never replaced, and a provider whose
binary files disagree with its calendar and instrument list is refused before anything is appended.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from qlib.utils import code_to_fname

from storm_bt.data.calendar import nyse_sessions
from storm_bt.data.schema import DataValidationError, check_instrument_name
from storm_bt.io import atomic_write_text, exclusive, staged_dir

__all__ = [
    "FIELDS",
    "ProviderSummary",
    "benchmark_name",
    "check_provider",
    "is_provider",
    "provider_digest",
    "provider_fields",
    "provider_meta",
    "read_bin",
    "read_calendar",
    "read_instruments",
    "record_universe",
    "write_instruments",
    "write_provider",
]

log = logging.getLogger(__name__)

FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "factor", "vwap", "change")
_BIN_DTYPE = "<f4"
_FLOAT32_EPS = 1e-6
_OVERLAP_RTOL = 1e-4  # adjusted returns of re-downloaded history must agree to this relative level
_META_FILE = "storm_bt_provider.json"
_SCALE_POWER = {"open": 1, "high": 1, "low": 1, "close": 1, "vwap": 1, "factor": 1, "volume": -1, "change": 0}
"""How a field moves when the adjustment basis is multiplied by ``scale``: ``value * scale**power``."""


@dataclass(frozen=True)
class ProviderSummary:
    """What a write did, for logs and for the CLI's report."""

    qlib_dir: Path
    universe: str
    benchmark: str
    instruments: int
    first_session: pd.Timestamp
    last_session: pd.Timestamp
    appended_sessions: int  # sessions added to the calendar by this write (all of them on a fresh build)
    mode: str  # "fresh" or "update"


def benchmark_name(universe: str) -> str:
    """Name of the equal-weight benchmark instrument written for ``universe``."""
    return f"{universe.upper()}_EW"


def provider_fields(panel: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Qlib fields as (sessions x instruments) frames from a long panel of raw bars."""
    wide = {
        f: panel.pivot(index="date", columns="instrument", values=f)
        for f in ("open", "high", "low", "close", "adj_close", "volume")
    }
    factor = wide["adj_close"] / wide["close"]
    out = {f: wide[f] * factor for f in ("open", "high", "low", "close")}
    out["volume"] = wide["volume"] / factor
    out["factor"] = factor
    out["vwap"] = (out["high"] + out["low"] + out["close"]) / 3.0
    out["change"] = out["close"].pct_change(fill_method=None)
    return out


def _equal_weight_returns(close: pd.DataFrame) -> pd.Series:
    """Mean daily return of the instruments that traded on both days."""
    return close.pct_change(fill_method=None).mean(axis=1, skipna=True).fillna(0.0)


def _bin_path(root: Path, instrument: str, field: str) -> Path:
    return root / "features" / code_to_fname(instrument).lower() / f"{field}.day.bin"


def read_bin(root: str | Path, instrument: str, field: str) -> tuple[int, np.ndarray]:
    """Start index in the calendar and float32 values of one provider field."""
    raw = np.fromfile(_bin_path(Path(root), instrument, field), dtype=_BIN_DTYPE)
    return int(raw[0]), raw[1:]


def _write_bin(root: Path, instrument: str, field: str, start: int, values: np.ndarray) -> None:
    path = _bin_path(root, instrument, field)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.hstack([[start], values]).astype(_BIN_DTYPE).tofile(path)


def _append_bin(root: Path, instrument: str, field: str, values: np.ndarray) -> None:
    with _bin_path(root, instrument, field).open("ab") as fh:
        np.asarray(values, dtype=_BIN_DTYPE).tofile(fh)


def read_calendar(root: str | Path) -> pd.DatetimeIndex:
    """The provider's trading calendar (``calendars/day.txt``)."""
    return pd.DatetimeIndex(pd.read_csv(Path(root) / "calendars" / "day.txt", header=None)[0], name="date")


def _write_calendar(root: Path, calendar: pd.DatetimeIndex) -> None:
    atomic_write_text(root / "calendars" / "day.txt", "\n".join(f"{d:%Y-%m-%d}" for d in calendar) + "\n")


def read_instruments(root: Path, name: str) -> pd.DataFrame:
    """``instruments/<name>.txt`` as a frame of each member's first and last session (empty if absent)."""
    path = root / "instruments" / f"{name}.txt"
    if not path.exists():
        return pd.DataFrame(columns=["start", "end"], index=pd.Index([], name="instrument"))
    frame = pd.read_csv(path, sep="\t", header=None, names=["instrument", "start", "end"], parse_dates=["start", "end"])
    return frame.set_index("instrument")


def write_instruments(root: Path, name: str, ranges: pd.DataFrame) -> None:
    """Write ``instruments/<name>.txt`` atomically from a frame of first and last sessions."""
    lines = [f"{inst}\t{r.start:%Y-%m-%d}\t{r.end:%Y-%m-%d}" for inst, r in ranges.sort_index().iterrows()]
    atomic_write_text(root / "instruments" / f"{name}.txt", "\n".join(lines) + "\n")


def _instrument_ranges(fields: dict[str, pd.DataFrame]) -> pd.DataFrame:
    present = fields["close"].notna() | fields["factor"].notna()
    first = present.idxmax()
    last = present[::-1].idxmax()
    return pd.DataFrame({"start": first, "end": last}).rename_axis("instrument")


def _benchmark_fields(level: pd.Series) -> dict[str, pd.Series]:
    """An index level as a tradeable-looking instrument (OHLC = level, no volume)."""
    ones = pd.Series(1.0, index=level.index)
    return {
        "open": level,
        "high": level,
        "low": level,
        "close": level,
        "volume": ones * 0.0,
        "factor": ones,
        "vwap": level,
        "change": level.pct_change(fill_method=None),
    }


def _write_instrument(
    stage: Path, inst: str, fields: dict[str, pd.DataFrame], span: pd.Series, position: pd.Series
) -> None:
    for field in FIELDS:
        values = fields[field].loc[span.start : span.end, inst].to_numpy()
        _write_bin(stage, inst, field, int(position[span.start]), values)


def _write_benchmark(stage: Path, bench: str, level: pd.Series, calendar: pd.DatetimeIndex) -> None:
    start = int(calendar.get_loc(level.dropna().index[0]))
    for field, series in _benchmark_fields(level.reindex(calendar[start:])).items():
        _write_bin(stage, bench, field, start, series.to_numpy())


def _fresh(stage: Path, fields: dict[str, pd.DataFrame], universe: str, bench: str, bench_level: pd.Series) -> int:
    calendar = nyse_sessions(fields["close"].index[0], fields["close"].index[-1])
    position = pd.Series(np.arange(len(calendar)), index=calendar)
    ranges = _instrument_ranges(fields)
    for inst, span in ranges.iterrows():
        _write_instrument(stage, str(inst), fields, span, position)
    _write_benchmark(stage, bench, bench_level, calendar)
    _write_calendar(stage, calendar)
    write_instruments(stage, "all", ranges)
    write_instruments(stage, universe, ranges)
    return len(calendar)


def _scale_to_store(
    stage: Path, inst: str, stored_end: pd.Timestamp, calendar: pd.DatetimeIndex, new_close: pd.Series
) -> float:
    """Factor that puts re-downloaded adjusted prices on the stored adjustment basis."""
    start, stored = read_bin(stage, inst, "close")
    stored_close = pd.Series(stored, index=calendar[start : start + len(stored)])
    overlap = new_close.dropna().index.intersection(stored_close.dropna().index)
    if stored_end not in overlap:
        raise DataValidationError(
            f"{inst}: the new data must include the last stored session {stored_end.date()} to continue the "
            f"adjusted price series (it covers {new_close.first_valid_index().date()} .. "
            f"{new_close.last_valid_index().date()})."
        )
    scale = float(stored_close[stored_end]) / float(new_close[stored_end])
    if abs(scale - 1.0) < _FLOAT32_EPS:  # same basis, only float32 round-off in the store
        scale = 1.0
    rescaled = new_close[overlap] * scale
    ratio = (rescaled.pct_change() - stored_close[overlap].astype(float).pct_change()).abs().dropna()
    if (ratio > _OVERLAP_RTOL).any():
        day = ratio.index[int(np.argmax(ratio.to_numpy() > _OVERLAP_RTOL))]
        raise DataValidationError(
            f"{inst}: adjusted returns on {day.date()} differ between the stored provider and the new data; "
            "the source changed or a split is not adjusted. Rebuild the provider from one consistent source."
        )
    return scale


def _update(stage: Path, fields: dict[str, pd.DataFrame], universe: str, bench: str, bench_level: pd.Series) -> int:
    old_calendar = read_calendar(stage)
    new_index = fields["close"].index
    if new_index[0] < old_calendar[0]:
        raise DataValidationError(
            f"New data starts {new_index[0].date()}, before the provider's first session {old_calendar[0].date()}; "
            "history cannot be prepended incrementally. Write a fresh provider instead."
        )
    extra = nyse_sessions(old_calendar[-1], max(new_index[-1], old_calendar[-1]))[1:]
    calendar = old_calendar.append(extra)
    position = pd.Series(np.arange(len(calendar)), index=calendar)
    stored = read_instruments(stage, "all")
    ranges = _instrument_ranges(fields)
    for inst, span in ranges.iterrows():
        inst = str(inst)
        if inst not in stored.index:
            _write_instrument(stage, inst, fields, span, position)
            continue
        end = stored.at[inst, "end"]
        scale = _scale_to_store(stage, inst, end, calendar, fields["close"][inst])
        for field in FIELDS:
            appended = fields[field].loc[end:, inst].iloc[1:]  # sessions after the stored end
            _append_bin(stage, inst, field, appended.to_numpy() * scale ** _SCALE_POWER[field])
        ranges.loc[inst] = [stored.at[inst, "start"], max(end, span.end)]
    _extend_benchmark(stage, bench, bench_level, calendar)
    merged = pd.concat([stored.drop(index=ranges.index, errors="ignore"), ranges])
    write_instruments(stage, "all", merged)
    members = read_instruments(stage, universe).index.union(ranges.index)
    write_instruments(stage, universe, merged.loc[members])
    _write_calendar(stage, calendar)
    return len(extra)


def _extend_benchmark(stage: Path, bench: str, bench_level: pd.Series, calendar: pd.DatetimeIndex) -> None:
    if not _bin_path(stage, bench, "close").exists():
        _write_benchmark(stage, bench, bench_level, calendar)
        return
    start, stored = read_bin(stage, bench, "close")
    last = calendar[start + len(stored) - 1]
    growth = bench_level / bench_level.get(last, np.nan)
    if not np.isfinite(growth.get(last, np.nan)):
        raise DataValidationError(
            f"Benchmark {bench}: the new data must include its last stored session {last.date()}."
        )
    level = (growth * float(stored[-1])).loc[calendar[calendar > last]]
    for field, series in _benchmark_fields(pd.concat([pd.Series([stored[-1]], index=[last]), level])).items():
        _append_bin(stage, bench, field, series.to_numpy()[1:])


def provider_digest(root: str | Path) -> str:
    """SHA-256 of a provider's calendar, instrument lists and binary files: equal digests, equal data.

    Anything prepared from a provider (a processed handler) is keyed by it, so an append or a
    rebuild with other prices is never served what was prepared from the old content.
    """
    root = Path(root)
    files = [root / "calendars" / "day.txt", *sorted((root / "instruments").glob("*.txt"))]
    files += sorted((root / "features").glob("*/*.bin"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def is_provider(root: str | Path) -> bool:
    """Whether ``root`` holds a provider (its calendar and instrument list)."""
    root = Path(root)
    return (root / "calendars" / "day.txt").is_file() and (root / "instruments" / "all.txt").is_file()


def _check_target(root: Path) -> None:
    """Refuse to write over anything that is not a provider: a file, or a folder with other content."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} is a file, not a folder: give --qlib-dir a new or empty folder, or a provider.")
    if root.is_dir() and not is_provider(root) and any(root.iterdir()):
        raise ValueError(
            f"{root} is a folder that is not a Qlib provider (no calendars/day.txt and instruments/all.txt) "
            "and is not empty; it is left untouched. Give --qlib-dir a new or empty folder, or an existing provider."
        )


def _stored_span(root: Path, instrument: str, field: str) -> tuple[int, int]:
    """Start index and number of values of one binary file, read from its header and size alone."""
    path = _bin_path(root, instrument, field)
    size = path.stat().st_size if path.is_file() else 0
    if size < 4:
        raise DataValidationError(f"{path} is missing or empty: the provider is damaged; rebuild it from the CSVs.")
    with path.open("rb") as fh:
        start = int(np.frombuffer(fh.read(4), dtype=_BIN_DTYPE)[0])
    return start, size // 4 - 1


def check_provider(root: str | Path) -> None:
    """Raise unless every stock's binary files span exactly its range in ``instruments/all.txt``.

    An append to a file shorter or longer than its listed range would shift every new value by
    the difference, so this runs before any update.
    """
    root = Path(root)
    calendar = read_calendar(root)
    position = pd.Series(np.arange(len(calendar)), index=calendar)
    listing = root / "instruments" / "all.txt"
    for inst, span in read_instruments(root, "all").iterrows():
        if span.start not in position.index or span.end not in position.index:
            raise DataValidationError(
                f"{listing}: {inst} spans {span.start.date()}..{span.end.date()}, which is not inside "
                "calendars/day.txt: the provider is damaged; rebuild it from the CSV files."
            )
        first = int(position[span.start])
        expected = int(position[span.end]) - first + 1
        for field in FIELDS:
            start, length = _stored_span(root, str(inst), field)
            if (start, length) != (first, expected):
                raise DataValidationError(
                    f"{_bin_path(root, str(inst), field)} holds {length} values from session {start}, but "
                    f"{listing} lists {inst} over {span.start.date()}..{span.end.date()} ({expected} values from "
                    f"session {first}): the provider is damaged; rebuild it from the CSV files."
                )


def _stage_write(
    root: Path, extend: bool, fields: dict[str, pd.DataFrame], universe: str, bench: str, level: pd.Series
) -> tuple[pd.DatetimeIndex, int]:
    """Write (or extend) the provider in a staging folder that replaces ``root`` only if all of it succeeded."""
    with staged_dir(root, copy_existing=extend) as stage:
        added = (_update if extend else _fresh)(stage, fields, universe, bench, level)
        record_universe(
            stage,
            universe,
            {"benchmark": bench, "instruments": int(fields["close"].shape[1])},
            vwap="estimated as adjusted (high + low + close) / 3; Yahoo publishes no VWAP",
            prices="split- and dividend-adjusted: raw x factor, factor = adj_close / close; volume / factor",
        )
        return read_calendar(stage), added


def provider_meta(root: Path) -> dict[str, Any]:
    """The provider's metadata: each universe's benchmark and size, and how prices were written."""
    meta_path = root / _META_FILE
    return json.loads(meta_path.read_text()) if meta_path.exists() else {"universes": {}}


def record_universe(root: Path, universe: str, entry: dict[str, Any], **notes: str) -> None:
    """Describe ``universe`` (and any provider-wide ``notes``) in the provider's metadata file."""
    meta = provider_meta(root)
    meta["universes"][universe] = entry
    meta.update(notes)
    atomic_write_text(root / _META_FILE, json.dumps(meta, indent=2, sort_keys=True))


def write_provider(
    panel: pd.DataFrame,
    qlib_dir: str | Path,
    universe: str,
    benchmark_close: pd.Series | None = None,
    benchmark: str | None = None,
    rebuild: bool = False,
) -> ProviderSummary:
    """Write ``panel`` into the Qlib provider at ``qlib_dir``, extending it if it already exists.

    :param panel: validated, calendar-aligned long panel (see :mod:`storm_bt.data.csv_source`).
    :param universe: name of the instrument list written for these tickers (e.g. ``dj30``).
    :param benchmark_close: an index level series (e.g. a downloaded ``^DJI``); default: the
        equal-weight total-return index of the panel.
    :param benchmark: instrument name of the benchmark; default ``<UNIVERSE>_EW``.
    :param rebuild: replace an existing provider by one written from ``panel`` alone (the old one
        stays if the write fails) instead of extending it.
    :raises LockedError: another process is writing the same provider.
    """
    if not universe or not universe.replace("_", "").isalnum():
        raise ValueError(f"Universe name must be alphanumeric (underscores allowed), got {universe!r}.")
    root = Path(qlib_dir)
    bench = check_instrument_name(benchmark or benchmark_name(universe), "benchmark")
    for instrument in panel["instrument"].unique():
        check_instrument_name(str(instrument), "panel")
    fields = provider_fields(panel)
    if benchmark_close is None:
        level = 100.0 * (1.0 + _equal_weight_returns(fields["close"])).cumprod()
    else:
        level = benchmark_close.astype(float).reindex(fields["close"].index)
    with exclusive(root, "Qlib provider"):
        _check_target(root)
        extend = is_provider(root) and not rebuild
        if extend:
            check_provider(root)
        calendar, added = _stage_write(root, extend, fields, universe, bench, level)
    mode = "update" if extend else "fresh"
    summary = ProviderSummary(
        root, universe, bench, int(fields["close"].shape[1]), calendar[0], calendar[-1], added, mode
    )
    log.info(
        "Provider %s (%s): %d instruments, %s .. %s, %d new sessions",
        root,
        mode,
        summary.instruments,
        summary.first_session.date(),
        summary.last_session.date(),
        added,
    )
    return summary
