"""From a Qlib handler frame to STORM's [days x stocks x features] windows, with masks.

Qlib hands models a long frame indexed by (datetime, instrument). STORM needs, for every date t,
the ``window`` sessions ending at t for the whole universe. :class:`Panel` reindexes the frame
once onto a dense (dates x instruments) grid (absent rows are masked, never invented), and
:class:`WindowDataset` serves windows by their last date. A window ending at t reads rows up to
t only, so a prediction for t cannot see anything after t.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

__all__ = ["Panel", "WindowDataset", "training_signature"]


@dataclass(frozen=True)
class Panel:
    """A dense (dates x instruments) view of a handler frame."""

    dates: pd.DatetimeIndex
    instruments: pd.Index
    features: np.ndarray  # (D, N, F) float32, 0 where absent
    present: np.ndarray  # (D, N) bool: the frame has a row for (date, instrument)
    labels: np.ndarray  # (D, N) float32, NaN where no label

    @classmethod
    def from_frame(
        cls,
        features: pd.DataFrame,
        labels: pd.Series | None = None,
        instruments: Sequence[str] | None = None,
    ) -> Panel:
        """Reindex ``features`` (rows (datetime, instrument)) onto dates x ``instruments``.

        ``instruments`` fixes the stock axis (a trained model's universe); by default it is every
        instrument of the frame, sorted. Rows of other instruments are dropped.
        """
        if not isinstance(features.index, pd.MultiIndex) or list(features.index.names) != ["datetime", "instrument"]:
            raise ValueError(
                f"Expected a frame indexed by (datetime, instrument), got index names {list(features.index.names)}."
            )
        if features.index.has_duplicates:
            dup = features.index[features.index.duplicated()][0]
            raise ValueError(f"Duplicate (datetime, instrument) row in the handler frame: {dup}.")
        dates = pd.DatetimeIndex(features.index.get_level_values("datetime").unique()).sort_values()
        if instruments is None:
            instruments = sorted(features.index.get_level_values("instrument").unique())
        inst = pd.Index(list(instruments), name="instrument")
        grid = pd.MultiIndex.from_product([dates, inst], names=["datetime", "instrument"])
        d, n = len(dates), len(inst)
        present = pd.Series(True, index=features.index).reindex(grid, fill_value=False).to_numpy(dtype=bool, copy=True)
        present = present.reshape(d, n)
        values = features.reindex(grid).to_numpy(dtype=np.float32).reshape(d, n, features.shape[1])
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        if labels is None:
            label_values = np.full((d, n), np.nan, dtype=np.float32)
        else:
            label_values = labels.reindex(grid).to_numpy(dtype=np.float32, copy=True).reshape(d, n)
        return cls(dates, inst, values, present, label_values)

    def save(self, path: str | Path) -> None:
        """Write the panel to ``path`` (NumPy's ``.npz``); :meth:`load` reads it back without Qlib."""
        with open(path, "wb") as file:
            np.savez(
                file,
                dates=self.dates.to_numpy(dtype="datetime64[ns]"),
                instruments=np.asarray(self.instruments, dtype=str),
                features=self.features,
                present=self.present,
                labels=self.labels,
            )

    @classmethod
    def load(cls, path: str | Path) -> Panel:
        with np.load(path, allow_pickle=False) as saved:
            return cls(
                pd.DatetimeIndex(saved["dates"]),
                pd.Index(saved["instruments"].tolist(), name="instrument"),
                saved["features"],
                saved["present"],
                saved["labels"],
            )

    def positions(self, start: pd.Timestamp | str | None, end: pd.Timestamp | str | None) -> np.ndarray:
        """Indices of the dates within [start, end] (inclusive, either side open when None)."""
        keep = np.ones(len(self.dates), dtype=bool)
        if start is not None:
            keep &= self.dates >= pd.Timestamp(start)
        if end is not None:
            keep &= self.dates <= pd.Timestamp(end)
        return np.flatnonzero(keep)


class WindowDataset(Dataset):
    """Windows of ``window`` sessions ending at the given date positions of a panel.

    Days before the panel's first date are padded and masked, so the first dates still get a
    (shorter) history instead of being dropped.
    """

    def __init__(self, panel: Panel, window: int, ends: np.ndarray, targets: np.ndarray | None = None) -> None:
        self.panel = panel
        self.window = window
        self.ends = np.asarray(ends, dtype=np.int64)
        self.targets = panel.labels if targets is None else targets  # (D, N): what ``y`` of a batch reads
        self._features = torch.from_numpy(panel.features)
        self._present = torch.from_numpy(panel.present)
        self._targets = torch.from_numpy(self.targets)

    @classmethod
    def labelled(cls, panel: Panel, window: int, start=None, end=None, target_days: int = 1) -> WindowDataset:
        """Windows ending in [start, end] on dates where at least one present stock has a target.

        The target is the date's label, or with ``target_days`` > 1 the mean of the labels of that
        many consecutive panel dates from it on, all inside [start, end]: a smoother multi-day
        target made of the segment's own labels, so it reads no price the segment's labels do not
        (the last ``target_days - 1`` dates have none).
        """
        if isinstance(target_days, bool) or not isinstance(target_days, int) or target_days < 1:
            raise ValueError(f"target_days must be a whole number of at least 1, got {target_days!r}.")
        pos = panel.positions(start, end)
        targets = panel.labels if target_days == 1 else _forward_mean(panel.labels, pos, target_days)
        has_target = (np.isfinite(targets) & panel.present).any(axis=1)
        return cls(panel, window, pos[has_target[pos]], targets)

    def __len__(self) -> int:
        return len(self.ends)

    def to(self, device: torch.device | str) -> WindowDataset:
        """The same windows with the panel on ``device`` (a GPU then slices its batches itself)."""
        moved = copy.copy(self)
        moved._features, moved._present, moved._targets = (
            t.to(device) for t in (self._features, self._present, self._targets)
        )
        return moved

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The windows at ``indices`` stacked, as a DataLoader over the items would give them, in one gather
        on the panel's device: ``(x, mask, y, ends)`` of shapes (B, T, N, F), (B, T, N), (B, N), (B,)."""
        device = self._features.device
        picked = self.ends[np.asarray(indices, dtype=np.int64)]
        ends = torch.as_tensor(picked, device=device)
        days = ends[:, None] + torch.arange(1 - self.window, 1, device=device)  # (B, T)
        before = days < 0  # days before the panel starts: zeros, masked
        days = days.clamp(min=0)
        x, mask = self._features[days], self._present[days] & ~before[..., None]
        if (picked < self.window - 1).any():  # asked on the host: asking the device would wait for it
            x = x.masked_fill(before[..., None, None], 0.0)
        return x, mask, self._targets[ends], ends

    def batches(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Every window in order, ``size`` at a time (the last batch may be shorter)."""
        for start in range(0, len(self), size):
            yield self.batch(range(start, min(start + size, len(self))))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """``(x, mask, y, end)``: (T, N, F) features, (T, N) presence, (N,) targets at the end date, its index."""
        x, mask, y, ends = self.batch([i])
        return x[0], mask[0], y[0], int(ends[0])


def _forward_mean(labels: np.ndarray, positions: np.ndarray, days: int) -> np.ndarray:
    """(D, N) mean of the labels at ``positions[i:i + days]`` for each ``positions[i]``; NaN where any
    of those is missing or lies past the last position (and off ``positions``)."""
    means = np.full(labels.shape, np.nan, dtype=labels.dtype)
    if len(positions) >= days:
        ahead = np.lib.stride_tricks.sliding_window_view(labels[positions], days, axis=0)  # (P - days + 1, N, days)
        means[positions[: len(ahead)]] = ahead.mean(axis=-1)
    return means


def training_signature(train: WindowDataset, valid: WindowDataset | None) -> dict:
    """What a fit trains on (universe, train and valid spans, a hash of the panel's values): a
    checkpoint is resumed only on the very same data. A refit has no valid windows (None)."""
    digest = hashlib.blake2b(digest_size=16)
    arrays = [train.panel.features, train.panel.present, train.panel.labels]
    if train.targets is not train.panel.labels:  # a multi-day target
        arrays.append(train.targets)
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return {
        "instruments": list(train.panel.instruments),
        "train": _span(train),
        "valid": [] if valid is None else _span(valid),
        "content": digest.hexdigest(),
    }


def _span(data: WindowDataset) -> list:
    """First and last end date and count of a window set (empty when there are none; the trainer says so)."""
    if len(data) == 0:
        return []
    return [str(data.panel.dates[data.ends[0]]), str(data.panel.dates[data.ends[-1]]), len(data)]
