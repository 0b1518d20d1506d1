"""Every validation error names the file, the row and the field."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from storm_bt.data.csv_source import load_csv_dir, read_bars_file
from storm_bt.data.schema import DataQualityWarning, DataValidationError
from storm_bt.data.testing import bars_to_csv_text


def _write(tmp_path: Path, text: str, name: str = "ABC.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _edit(bars: pd.DataFrame, row: int, field: str, value: object) -> str:
    """CSV text of ``bars`` with the cell at data row ``row`` (0-based) replaced by ``value``."""
    lines = bars_to_csv_text(bars).splitlines()
    header = lines[0].split(",")
    cells = lines[row + 1].split(",")
    cells[header.index(field)] = str(value)
    lines[row + 1] = ",".join(cells)
    return "\n".join(lines) + "\n"


def test_clean_file_round_trips(tmp_path, bars):
    read = read_bars_file(_write(tmp_path, bars_to_csv_text(bars)))
    assert list(read.columns) == ["open", "high", "low", "close", "adj_close", "volume"]
    np.testing.assert_allclose(read["close"].to_numpy(), bars["close"].to_numpy())
    assert read.index.equals(pd.DatetimeIndex(bars["date"], name="date"))


def test_missing_column(tmp_path, bars):
    text = bars_to_csv_text(bars.drop(columns="adj_close"))
    with pytest.raises(DataValidationError, match=r"ABC\.csv: missing column\(s\) 'adj_close'"):
        read_bars_file(_write(tmp_path, text))


@pytest.mark.parametrize("field", ["open", "close", "volume"])
def test_non_numeric_value(tmp_path, bars, field):
    path = _write(tmp_path, _edit(bars, 3, field, "abc"))
    with pytest.raises(DataValidationError, match=rf"ABC\.csv, row 5, field '{field}': 'abc' is not a number"):
        read_bars_file(path)


@pytest.mark.parametrize("token", ["", "NaN", "null"])
def test_missing_value(tmp_path, bars, token):
    path = _write(tmp_path, _edit(bars, 2, "high", token))
    with pytest.raises(DataValidationError, match=r"ABC\.csv, row 4, field 'high': missing value"):
        read_bars_file(path)


@pytest.mark.parametrize(("field", "value"), [("close", "-1.5"), ("low", "0"), ("adj_close", "-0.01")])
def test_non_positive_price(tmp_path, bars, field, value):
    path = _write(tmp_path, _edit(bars, 6, field, value))
    with pytest.raises(DataValidationError, match=rf"row 8, field '{field}': price must be a positive finite number"):
        read_bars_file(path)


def test_negative_volume(tmp_path, bars):
    with pytest.raises(DataValidationError, match=r"row 2, field 'volume': volume must be non-negative"):
        read_bars_file(_write(tmp_path, _edit(bars, 0, "volume", "-5")))


def test_low_above_high(tmp_path, bars):
    path = _write(tmp_path, _edit(bars, 1, "low", "99.0"))
    with pytest.raises(DataValidationError, match=r"ABC\.csv, row 3, field 'low': low \(99\.0\) is above high \(10\.8"):
        read_bars_file(path)


def test_bad_date(tmp_path, bars):
    path = _write(tmp_path, _edit(bars, 4, "date", "2020/01/08"))
    with pytest.raises(
        DataValidationError, match=r"row 6, field 'date': '2020/01/08' is not a date in YYYY-MM-DD form"
    ):
        read_bars_file(path)


def test_duplicate_date(tmp_path, bars):
    path = _write(tmp_path, _edit(bars, 3, "date", "2020-01-06"))
    with pytest.raises(
        DataValidationError, match=r"row 5, field 'date': duplicate date 2020-01-06 \(first seen on row 4\)"
    ):
        read_bars_file(path)


def test_unsorted_dates(tmp_path, bars):
    swapped = bars.iloc[[0, 1, 3, 2, 4, 5, 6, 7]]
    path = _write(tmp_path, bars_to_csv_text(swapped))
    with pytest.raises(DataValidationError, match=r"row 5, field 'date': 2020-01-06 comes after 2020-01-07 \(row 4\)"):
        read_bars_file(path)


@pytest.mark.parametrize(("day", "why"), [("2020-01-04", "Saturday"), ("2020-01-01", "Wednesday")])
def test_date_off_nyse_calendar(tmp_path, bars, day, why):
    shifted = bars.copy()
    shifted.loc[0, "date"] = pd.Timestamp(day)
    path = _write(tmp_path, bars_to_csv_text(shifted.sort_values("date")))
    with pytest.raises(DataValidationError, match=rf"field 'date': {day} \({why}\) is not an NYSE trading session"):
        read_bars_file(path)


def test_gap_is_an_error_by_default(tmp_path, bars):
    path = _write(tmp_path, bars_to_csv_text(bars.drop(index=[3, 4])))
    with pytest.raises(
        DataValidationError, match=r"row 4, field 'date': 2 NYSE session\(s\) missing .* first 2020-01-07"
    ):
        read_bars_file(path)


def test_gap_policies(tmp_path, bars):
    path = _write(tmp_path, bars_to_csv_text(bars.drop(index=[3, 4])))
    filled = read_bars_file(path, on_gap="ffill")
    assert len(filled) == 8
    gap = filled.loc["2020-01-07"]
    assert gap["open"] == gap["high"] == gap["low"] == gap["close"] == 10.2
    assert gap["volume"] == 0
    assert gap["adj_close"] == pytest.approx(10.2 * 0.9)
    kept = read_bars_file(path, on_gap="nan")
    assert kept.loc["2020-01-08"].isna().all() and kept["close"].notna().sum() == 6


def test_too_little_history(tmp_path, bars):
    with pytest.raises(DataValidationError, match=r"ABC\.csv: only 8 sessions of history .* fewer than min_history=60"):
        read_bars_file(_write(tmp_path, bars_to_csv_text(bars)), min_history=60)


def test_zero_volume_warns_and_keeps_the_row(tmp_path, bars):
    path = _write(tmp_path, _edit(bars, 5, "volume", "0"))
    with pytest.warns(DataQualityWarning, match=r"row 7, field 'volume': zero volume on 1 session"):
        read = read_bars_file(path)
    assert read.loc["2020-01-09", "volume"] == 0


def test_empty_and_unreadable_files(tmp_path, bars):
    with pytest.raises(DataValidationError, match=r"ABC\.csv: the file has a header but no rows"):
        read_bars_file(_write(tmp_path, "date,open,high,low,close,adj_close,volume\n"))
    with pytest.raises(DataValidationError, match=r"EMPTY\.csv: not a readable CSV file"):
        read_bars_file(_write(tmp_path, "", "EMPTY.csv"))


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_gzip_file_is_named(tmp_path, bars, damage):
    packed = gzip.compress(bars_to_csv_text(bars).encode())
    if damage == "truncated":
        packed = packed[: len(packed) // 2]
    else:  # the gzip header survives, the deflate stream does not
        packed = packed[:10] + bytes(255 - b for b in packed[10:])
    path = tmp_path / "ABC.csv.gz"
    path.write_bytes(packed)
    with pytest.raises(DataValidationError, match=r"ABC\.csv\.gz: (a damaged gzip file|not a readable CSV file)"):
        read_bars_file(path)


def test_yahoo_header_and_gzip(tmp_path, bars):
    yahoo = bars.rename(
        columns={
            "date": "Date",
            "open": "Open",
            "high": "High",
            "low": "Low",
            "close": "Close",
            "adj_close": "Adj Close",
            "volume": "Volume",
        }
    )
    yahoo["Date"] = yahoo["Date"].dt.strftime("%Y-%m-%d 00:00:00-05:00")
    (tmp_path / "YH.csv.gz").write_bytes(gzip.compress(yahoo.to_csv(index=False).encode()))
    _write(tmp_path, bars_to_csv_text(bars), "OURS.csv")
    panel = load_csv_dir(tmp_path)
    assert sorted(panel["instrument"].unique()) == ["OURS", "YH"]
    by = panel.set_index(["instrument", "date"])["adj_close"]
    np.testing.assert_allclose(by["YH"].to_numpy(), by["OURS"].to_numpy())


def test_unknown_ticker_lists_what_exists(tmp_path, bars):
    _write(tmp_path, bars_to_csv_text(bars), "AAA.csv")
    with pytest.raises(DataValidationError, match=r"no file for ticker\(s\) ZZZ; available: AAA"):
        load_csv_dir(tmp_path, tickers=["AAA", "ZZZ"])


def test_folder_without_csv_files(tmp_path):
    with pytest.raises(DataValidationError, match=r"no <TICKER>\.csv or <TICKER>\.csv\.gz files found"):
        load_csv_dir(tmp_path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("close", "1e300", r"row 5, field 'close': price 1e\+300 is not plausible for a share"),
        ("high", "2e6", r"row 5, field 'high': price 2e\+06 is not plausible"),
        ("close", "11.5", r"row 5, field 'close': close \(11.5\) lies outside the day's range low 10.4 .. high 11.1"),
        ("open", "9.0", r"row 5, field 'open': open \(9.0\) lies outside the day's range"),
    ],
)
def test_implausible_prices_are_named(tmp_path, bars, field, value, message):
    path = _write(tmp_path, _edit(bars, 3, field, value))
    with pytest.raises(DataValidationError, match=message):
        read_bars_file(path)


def test_a_tenfold_one_day_move_warns_and_keeps_the_row(tmp_path, bars):
    spiked = bars.copy()
    spiked.loc[4, ["open", "high", "low", "close", "adj_close"]] = [1100.0, 1100.5, 1099.0, 1100.0, 990.0]
    path = _write(tmp_path, bars_to_csv_text(spiked))
    with pytest.warns(
        DataQualityWarning, match=r"row 6, field 'close': close moves from 10.8 to 1100.0 in one session"
    ):
        read = read_bars_file(path)
    assert read.loc["2020-01-08", "close"] == 1100.0


def test_a_date_in_the_future_is_refused_before_any_calendar_is_filled(tmp_path, bars):
    future = pd.concat([bars, bars.iloc[[-1]].assign(date=pd.Timestamp("2099-01-02"))], ignore_index=True)
    path = _write(tmp_path, bars_to_csv_text(future))
    with pytest.raises(DataValidationError, match=r"row 10, field 'date': 2099-01-02 is in the future"):
        read_bars_file(path, on_gap="ffill")
