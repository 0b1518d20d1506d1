"""Train / valid / test segments: carved from a calendar, checked for overlap and embargo.

Segments always come from configuration; this module only checks them, or proposes them for a
market whose dates are not known in advance (the synthetic market of the quickstart).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

__all__ = ["Segments"]

_NAMES = ("train", "valid", "test")


@dataclass(frozen=True)
class Segments:
    """Closed date ranges ``(first, last)`` for train, valid and test, in that order."""

    train: tuple[pd.Timestamp, pd.Timestamp]
    valid: tuple[pd.Timestamp, pd.Timestamp]
    test: tuple[pd.Timestamp, pd.Timestamp]

    @classmethod
    def from_config(cls, segments: dict) -> Segments:
        """Build from Qlib's ``segments: {train: [a, b], valid: [...], test: [...]}`` mapping."""
        missing = [n for n in _NAMES if n not in segments]
        if missing:
            raise ValueError(f"Segments {missing} are missing; expected train, valid and test, got {sorted(segments)}.")
        pairs = {n: (pd.Timestamp(segments[n][0]), pd.Timestamp(segments[n][1])) for n in _NAMES}
        return cls(**pairs)

    def to_config(self) -> dict[str, list[str]]:
        """Qlib's segments mapping with ISO date strings."""
        return {n: [f"{a:%Y-%m-%d}", f"{b:%Y-%m-%d}"] for n, (a, b) in self.items()}

    def items(self) -> list[tuple[str, tuple[pd.Timestamp, pd.Timestamp]]]:
        return [(n, getattr(self, n)) for n in _NAMES]

    def check(self, calendar: pd.DatetimeIndex, embargo: int) -> None:
        """Raise unless the segments are ordered, non-empty, inside ``calendar`` and separated.

        :param embargo: sessions that must lie strictly between one segment's last day and the
            next one's first day; at least the label horizon, so no label of an earlier segment
            reads a price of a later one.
        """
        for name, (first, last) in self.items():
            if first > last:
                raise ValueError(f"Segment {name} is empty: {first.date()} is after {last.date()}.")
            if first < calendar[0] or last > calendar[-1]:
                raise ValueError(
                    f"Segment {name} {first.date()}..{last.date()} is outside the data "
                    f"{calendar[0].date()}..{calendar[-1].date()}."
                )
        for (a, (_, a_last)), (b, (b_first, _)) in zip(self.items(), self.items()[1:], strict=False):
            between = int(((calendar > a_last) & (calendar < b_first)).sum())
            if b_first <= a_last or between < embargo:
                raise ValueError(
                    f"Segments {a} (ends {a_last.date()}) and {b} (starts {b_first.date()}) are {between} sessions "
                    f"apart; at least {embargo} are needed so that {a}'s labels never read {b}'s prices."
                )

    @classmethod
    def carve(cls, calendar: pd.DatetimeIndex, fractions: tuple[float, float, float], embargo: int) -> Segments:
        """Split ``calendar`` chronologically by ``fractions``, leaving ``embargo`` sessions between segments."""
        if len(fractions) != 3 or any(f <= 0 for f in fractions):
            raise ValueError(f"fractions must be three positive numbers, got {fractions}.")
        usable = len(calendar) - 2 * embargo
        if usable < 30:
            raise ValueError(f"{len(calendar)} sessions are too few to carve three segments with embargo {embargo}.")
        total = sum(fractions)
        n_train = int(usable * fractions[0] / total)
        n_valid = int(usable * fractions[1] / total)
        t_end = n_train - 1
        v_start, v_end = t_end + 1 + embargo, t_end + embargo + n_valid
        s_start = v_end + 1 + embargo
        return cls(
            (calendar[0], calendar[t_end]),
            (calendar[v_start], calendar[v_end]),
            (calendar[s_start], calendar[-1]),
        )
