"""Checks that a Qlib dataset handed to a model cannot leak the future into its fit.

Two ways a split leaks even when the segments themselves are ordered: a train label that reads
prices of the valid segment (the gap between them is shorter than the label's reach), and a
processor whose statistics were fitted on dates after the train segment.
"""

from __future__ import annotations

import pandas as pd
from qlib.data import D
from qlib.data.base import Feature
from qlib.data.dataset import DatasetH
from qlib.data.ops import Operators
from qlib.utils import parse_field

__all__ = ["check_fit_dataset", "label_reach"]


def label_reach(handler: object) -> int | None:
    """How many sessions after t the handler's label expressions read; None when its loader does not say."""
    fields = getattr(getattr(handler, "data_loader", None), "fields", None)
    if not isinstance(fields, dict) or "label" not in fields:
        return None
    expressions = fields["label"][0]
    namespace = {"Operators": Operators, "Feature": Feature}
    return max((eval(parse_field(e), namespace).get_extended_window_size()[1] for e in expressions), default=0)


def check_fit_dataset(dataset: DatasetH, train: tuple[pd.Timestamp, pd.Timestamp], valid_start: pd.Timestamp) -> None:
    """Raise, naming the setting, when ``dataset``'s train labels or fitted processors see past ``train``."""
    handler = dataset.handler
    reach = label_reach(handler)
    if reach:
        between = D.calendar(start_time=train[1], end_time=valid_start, freq="day")
        gap = int(((between > train[1]) & (between < valid_start)).sum())
        if gap < reach:
            raise ValueError(
                f"The label reads {reach} sessions ahead but only {gap} session(s) lie between the train segment's "
                f"end ({train[1].date()}) and the valid segment's start ({valid_start.date()}): the last train labels "
                f"would read valid prices. Leave at least {reach} sessions between the segments."
            )
    for processor in handler.get_all_processors():
        fitted_until = getattr(processor, "fit_end_time", None)
        if fitted_until is not None and pd.Timestamp(fitted_until) > train[1]:
            raise ValueError(
                f"{type(processor).__name__} is fitted up to fit_end_time {pd.Timestamp(fitted_until).date()}, after "
                f"the train segment ends ({train[1].date()}): its statistics would carry later data into training. "
                "Set the handler's fit_end_time to the train segment's end."
            )
