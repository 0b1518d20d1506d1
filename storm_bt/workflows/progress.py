"""Training progress of a ``qrun`` subprocess, read from the run's history file, not from its printed lines.

The trainer rewrites ``history.json`` (one record per finished epoch) atomically after every
epoch; a parent polls it and reports each new record. The wording of the trainer's output can
change without the progress going silent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from storm_bt.model.trainer import HISTORY, epoch_summary

__all__ = ["EpochFollower", "history_path"]


def history_path(config: dict[str, Any], cwd: str | Path) -> Path | None:
    """Where the model of a workflow config run in ``cwd`` writes its training history (None: it keeps none)."""
    run_dir = config["task"]["model"].get("kwargs", {}).get("run_dir")
    return None if run_dir is None else Path(cwd) / str(run_dir) / HISTORY


class EpochFollower:
    """While open, calls ``report(line)`` once for every epoch record added to ``history``.

    Records already there when it opens (a finished or resumed run) are not reported again.
    """

    def __init__(self, history: Path | None, report: Callable[[str], None], interval: float = 1.0) -> None:
        self.history = history
        self.report = report
        self.interval = interval
        self._seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="epoch-follower", daemon=True)

    def __enter__(self) -> EpochFollower:
        if self.history is not None:
            self._seen = len(self._records())
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.history is not None:
            self._stop.set()
            self._thread.join()
            self._poll()  # the last epoch may have landed after the final wait

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def _poll(self) -> None:
        records = self._records()
        for record in records[self._seen :]:
            self.report(epoch_summary(record))
        self._seen = max(self._seen, len(records))

    def _records(self) -> list[dict[str, Any]]:
        try:
            return json.loads(self.history.read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # not written yet; always replaced whole
            return []
