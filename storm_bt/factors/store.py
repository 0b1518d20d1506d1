"""Factor store: a trained STORM's embeddings for every (date, stock) in one HDF5 file.

Layout (D dates, N stocks; each array chunked by ``chunk_days`` dates and gzip-compressed)::

    dates        (D,)               "YYYY-MM-DD", ascending: the last session of each window
    instruments  (N,)
    present      (D, N)   bool      the stock trades on that date
    pooled       (D, N, E) float32  the per-stock vector given to the factor module (the RL state)
    ts_tokens    (D, T/p, N, 2d)    [z_e | z_q] of each time-series chunk of the window
    cs_tokens    (D, T, 2d)         [z_e | z_q] of each day's cross-sectional chunk
    ts_codes     (D, T/p, N) int32  code indices; cs_codes (D, T) int32

The row of date t is computed from the window ending at t: no value in it reads a later date.
Attributes record the model configuration, the data range, the seed and package versions. The
file is written beside its target and renamed only when complete, so an interrupted export
never leaves a half file in place; reading is lazy, by date range.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch
from torch import nn

from storm_bt.io import atomic_path, exclusive
from storm_bt.model.windows import WindowDataset
from storm_bt.workflows.segments import Segments

__all__ = ["EMBEDDINGS", "FactorStore", "FactorStoreError", "write_factor_store"]

EMBEDDINGS = ("pooled", "ts_tokens", "cs_tokens", "ts_codes", "cs_codes")


class FactorStoreError(ValueError):
    """A factor store that cannot be read, or a request it cannot answer."""


@torch.no_grad()
def _batches(model: nn.Module, data: WindowDataset, batch_size: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    model.eval()
    start = 0
    for x, mask, _, _ in data.to(next(model.parameters()).device).batches(batch_size):
        emb = model(x, mask).embeddings
        arrays = {
            "pooled": emb.stock,
            "ts_tokens": emb.ts_tokens,
            "cs_tokens": emb.cs_tokens,
            "ts_codes": emb.ts_codes,
            "cs_codes": emb.cs_codes,
        }
        yield start, {k: v.cpu().numpy() for k, v in arrays.items() if v is not None}
        start += len(x)


def write_factor_store(
    model: nn.Module,
    data: WindowDataset,
    out: str | Path,
    attrs: dict[str, Any],
    batch_size: int = 64,
    chunk_days: int = 64,
) -> Path:
    """Embed every window of ``data`` with ``model`` and write the store at ``out`` atomically, under its lock."""
    if len(data) == 0:
        raise FactorStoreError("Nothing to export: the date range has no windows.")
    out = Path(out)
    panel, n_dates = data.panel, len(data)
    with exclusive(out, "factor store"), atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("dates", data=np.array([f"{d:%Y-%m-%d}" for d in panel.dates[data.ends]], dtype="S10"))
            h5.create_dataset("instruments", data=np.array(list(panel.instruments), dtype="S"))
            h5.create_dataset("present", data=panel.present[data.ends], chunks=True, compression="gzip")
            for start, arrays in _batches(model, data, batch_size):
                for name, values in arrays.items():
                    if name not in h5:
                        shape = (n_dates, *values.shape[1:])
                        dtype = np.int32 if name.endswith("codes") else np.float32
                        h5.create_dataset(
                            name,
                            shape=shape,
                            dtype=dtype,
                            chunks=(min(chunk_days, n_dates), *shape[1:]),
                            compression="gzip",
                            shuffle=True,
                        )
                    h5[name][start : start + len(values)] = values
            for key, value in attrs.items():
                h5.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value, default=str)
    return out


class FactorStore:
    """Lazy reader of a factor store; use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._h5 = h5py.File(self.path, "r")
        except (OSError, ValueError) as exc:
            raise FactorStoreError(f"{self.path}: not a readable factor store ({exc}).") from exc
        missing = [k for k in ("dates", "instruments", "present", "pooled") if k not in self._h5]
        if missing:
            self._h5.close()
            raise FactorStoreError(f"{self.path}: not a factor store, datasets {missing} are missing.")
        self.dates = pd.DatetimeIndex(pd.to_datetime(self._h5["dates"][:].astype(str)))
        self.instruments = [s.decode() for s in self._h5["instruments"][:]]

    def __enter__(self) -> FactorStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._h5.close()

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._h5.attrs)

    @property
    def segments(self) -> Segments | None:
        """The train/valid/test segments the STORM that wrote this store was trained with (None: not recorded)."""
        recorded = self._h5.attrs.get("segments")
        return Segments.from_config(json.loads(recorded)) if recorded else None

    def names(self) -> list[str]:
        """The embeddings this store holds (a single-branch model has no tokens of the other branch)."""
        return [k for k in EMBEDDINGS if k in self._h5]

    def rows(self, start: str | pd.Timestamp | None = None, end: str | pd.Timestamp | None = None) -> slice:
        """Row slice of the dates in [start, end] (inclusive; open when None)."""
        lo = 0 if start is None else int(self.dates.searchsorted(pd.Timestamp(start), side="left"))
        hi = len(self.dates) if end is None else int(self.dates.searchsorted(pd.Timestamp(end), side="right"))
        return slice(lo, max(lo, hi))

    def read(self, name: str, start=None, end=None) -> np.ndarray:
        """``name`` for the dates in [start, end]; only those rows are read from disk."""
        if name not in self._h5 or name in ("dates", "instruments"):
            raise FactorStoreError(f"{self.path}: no embedding {name!r}; it holds {[*self.names(), 'present']}.")
        return self._h5[name][self.rows(start, end)]

    def _column(self, instrument: str) -> int:
        if instrument not in self.instruments:
            raise FactorStoreError(f"{self.path}: unknown instrument {instrument!r}; the store has {self.instruments}.")
        return self.instruments.index(instrument)

    def pooled(self, instrument: str, start=None, end=None) -> pd.DataFrame:
        """One stock's pooled vectors as a frame indexed by date (NaN rows where it does not trade)."""
        rows, col = self.rows(start, end), self._column(instrument)
        values = self._h5["pooled"][rows, col].astype(np.float64)
        values[~self._h5["present"][rows, col]] = np.nan
        return pd.DataFrame(values, index=self.dates[rows])

    def tokens(self, instrument: str, start=None, end=None) -> pd.DataFrame:
        """One stock's full token set per date, flattened: its TS tokens, then the day's CS tokens (the
        paper's RL state); NaN rows where it does not trade. A single-branch store gives its one branch."""
        col = self._column(instrument)
        rows = self.rows(start, end)
        parts = []
        if "ts_tokens" in self._h5:
            ts = self._h5["ts_tokens"][rows, :, col]  # (D, T/p, 2d): h5py reads only this stock's column
            parts.append(ts.reshape(len(ts), -1))
        if "cs_tokens" in self._h5:
            cs = self._h5["cs_tokens"][rows]
            parts.append(cs.reshape(len(cs), -1))
        values = np.concatenate(parts, axis=1).astype(np.float64)
        values[~self._h5["present"][rows, col]] = np.nan
        return pd.DataFrame(values, index=self.dates[rows])
