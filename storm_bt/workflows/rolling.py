"""Walk-forward folds: one train/valid/test split per test period, the way Qlib's ``RollingGen`` rolls a task.

A fold's test period starts at a step boundary (a calendar frequency such as the first session of
each year, or every ``step`` sessions), its valid segment is the ``valid_sessions`` sessions that
end ``embargo`` sessions before the test, and its train segment ends ``embargo`` sessions before
valid: from the data's first session (expanding window) or ``train_sessions`` long (sliding).
Every fold passes :meth:`Segments.check`, so no label of an earlier segment reads a price of a
later one. A block that cannot give a valid fold is refused before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

import pandas as pd

from storm_bt.io import check_keys
from storm_bt.workflows.segments import Segments

__all__ = ["FREQUENCIES", "RollingSpec", "rolling_folds"]

FREQUENCIES = {"yearly": "YS", "quarterly": "QS", "monthly": "MS"}
"""Calendar steps by name; any pandas offset alias (``"6MS"``, ``"2YS"``) is accepted as well."""


@dataclass(frozen=True)
class RollingSpec:
    """The ``rolling:`` block of an evaluation config."""

    first_test: pd.Timestamp  # the first test period starts at the first session on or after this date
    step: str | int = "yearly"  # a calendar frequency (yearly, quarterly, monthly or a pandas alias) or sessions
    window: Literal["expanding", "sliding"] = "expanding"
    valid_sessions: int = 252
    train_sessions: int | None = None  # sliding window only
    embargo: int = 2  # sessions between segments; at least the label horizon
    min_train_sessions: int = 504  # a fold with less training history is refused
    last_test: pd.Timestamp | None = None  # default: the data's last session

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RollingSpec:
        """Build from YAML values, naming the ``rolling.<key>`` that is wrong."""
        check_keys(raw, {f.name for f in fields(cls)}, required={"first_test"}, where="rolling")
        values = dict(raw)
        for key in ("first_test", "last_test"):
            if values.get(key) is not None:
                values[key] = pd.Timestamp(values[key])
        return cls(**values)

    def __post_init__(self) -> None:
        if self.window not in ("expanding", "sliding"):
            raise ValueError(f"rolling.window must be 'expanding' or 'sliding', got {self.window!r}.")
        if (self.window == "sliding") != (self.train_sessions is not None):
            raise ValueError("rolling.train_sessions is required for a sliding window, and only for one.")
        for key in ("valid_sessions", "min_train_sessions", "embargo"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "embargo" else 1):
                raise ValueError(f"rolling.{key} must be a positive whole number of sessions, got {value!r}.")
        if isinstance(self.step, bool) or (isinstance(self.step, int) and self.step <= self.embargo):
            raise ValueError(
                f"rolling.step of {self.step!r} sessions must be larger than the embargo ({self.embargo}), "
                "or the test periods would overlap the next fold's training labels."
            )
        if isinstance(self.step, str):
            try:
                pd.tseries.frequencies.to_offset(FREQUENCIES.get(self.step, self.step))
            except ValueError as e:
                raise ValueError(
                    f"rolling.step {self.step!r} is neither a number of sessions, one of {sorted(FREQUENCIES)}, "
                    "nor a pandas frequency alias such as '6MS'."
                ) from e

    def test_starts(self, calendar: pd.DatetimeIndex) -> list[int]:
        """Calendar positions where a test period starts (the last one runs to ``last_test``)."""
        end = self.last_test or calendar[-1]
        first = int(calendar.searchsorted(self.first_test))
        if first >= len(calendar) or calendar[first] > end:
            raise ValueError(
                f"rolling.first_test {self.first_test.date()} is after the data's last session "
                f"{calendar[-1].date()} (or after rolling.last_test)."
            )
        if isinstance(self.step, int):
            last = int(calendar.searchsorted(end, side="right"))
            return list(range(first, last, self.step))
        boundaries = pd.date_range(self.first_test, end, freq=FREQUENCIES.get(self.step, self.step))
        positions = {first} | {int(calendar.searchsorted(b)) for b in boundaries if b > calendar[first]}
        return sorted(p for p in positions if p < len(calendar) and calendar[p] <= end)


def rolling_folds(spec: RollingSpec, calendar: pd.DatetimeIndex) -> list[Segments]:
    """Every fold of ``spec`` on ``calendar``, each checked; an error names the key and the dates."""
    end = spec.last_test or calendar[-1]
    if end > calendar[-1]:
        raise ValueError(f"rolling.last_test {end.date()} is after the data's last session {calendar[-1].date()}.")
    starts = spec.test_starts(calendar)
    last = int(calendar.searchsorted(end, side="right")) - 1
    folds = []
    for k, start in enumerate(starts):
        test_end = starts[k + 1] - 1 if k + 1 < len(starts) else last
        valid_end = start - spec.embargo - 1
        valid_start = valid_end - spec.valid_sessions + 1
        train_end = valid_start - spec.embargo - 1
        train_start = 0 if spec.train_sessions is None else train_end - spec.train_sessions + 1
        if train_start < 0 or train_end - train_start + 1 < spec.min_train_sessions:
            have = max(0, train_end + 1)
            raise ValueError(
                f"rolling: the fold testing from {calendar[start].date()} has {have} training sessions before "
                f"its valid segment (data from {calendar[0].date()}); at least "
                f"{max(spec.min_train_sessions, spec.train_sessions or 0)} are needed (rolling.min_train_sessions"
                f"{', rolling.train_sessions' if spec.train_sessions else ''}). Move rolling.first_test later."
            )
        fold = Segments(
            (calendar[train_start], calendar[train_end]),
            (calendar[valid_start], calendar[valid_end]),
            (calendar[start], calendar[test_end]),
        )
        fold.check(calendar, embargo=spec.embargo)
        folds.append(fold)
    return folds
