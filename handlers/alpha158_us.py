"""Alpha158 for US daily data, with the label chosen by configuration.

Qlib's Alpha158 computes its 158 features from ``$open/$high/$low/$close/$vwap/$volume``; on a
provider written by :mod:`storm_bt.data.provider` those are adjusted prices and the vwap
estimate. What this handler adds:

* ``label``: ``"qlib"`` (default) is the return from t+1 close to t+2 close, what a signal formed
  at the close of t can earn when traded at the close of t+1; ``"storm"`` is the paper's t close
  to t+1 close return, only tradable at the close that formed the signal.
* processors that learn statistics (normalisation) are fit on ``fit_start_time..fit_end_time``
  only, and leaving that range out is an error instead of a silent fit on all data.
"""

from __future__ import annotations

from inspect import signature
from typing import Any

from qlib.contrib.data.handler import Alpha158
from qlib.data.dataset.handler import DataHandlerLP
from qlib.utils import get_callable_kwargs

__all__ = ["LABELS", "Alpha158US", "label_horizon"]

LABELS: dict[str, tuple[str, int]] = {
    "qlib": ("Ref($close, -2)/Ref($close, -1) - 1", 2),
    "storm": ("Ref($close, -1)/$close - 1", 1),
}
"""Label name -> (Qlib expression, sessions after t the label looks at)."""

DEFAULT_INFER_PROCESSORS: tuple[dict[str, Any], ...] = (
    {"class": "RobustZScoreNorm", "kwargs": {"fields_group": "feature", "clip_outlier": True}},
    {"class": "Fillna", "kwargs": {"fields_group": "feature"}},
)
DEFAULT_LEARN_PROCESSORS: tuple[dict[str, Any], ...] = (
    {"class": "DropnaLabel"},
    {"class": "CSZScoreNorm", "kwargs": {"fields_group": "label"}},
)


def label_horizon(label: str) -> int:
    """How many sessions after t the label ``label`` reads; splits need an embargo at least this long."""
    return _check_label(label)[1]


def _check_label(label: str) -> tuple[str, int]:
    if label not in LABELS:
        raise ValueError(f"Unknown label {label!r}; expected one of {sorted(LABELS)}.")
    return LABELS[label]


def _needs_fit(processor: Any) -> bool:
    if isinstance(processor, dict) or isinstance(processor, str):
        klass, _ = get_callable_kwargs(processor, "qlib.data.dataset.processor")
    else:
        klass = type(processor)
    params = signature(klass.__init__).parameters
    return "fit_start_time" in params and "fit_end_time" in params


class Alpha158US(Alpha158):
    """Alpha158 features with a selectable label and processors fit on the training range only.

    :param instruments: market name (an ``instruments/<name>.txt`` of the provider) or a list.
    :param start_time: first date of data loaded (features need 60 sessions of warm-up before
        the first date that is used).
    :param end_time: last date of data loaded.
    :param fit_start_time: first date the processors learn statistics from (the train segment).
    :param fit_end_time: last date the processors learn from; must not reach into valid or test.
    :param label: ``"qlib"`` or ``"storm"``, see :data:`LABELS`.
    """

    def __init__(
        self,
        instruments: str | list[str] = "all",
        start_time: str | None = None,
        end_time: str | None = None,
        fit_start_time: str | None = None,
        fit_end_time: str | None = None,
        label: str = "qlib",
        infer_processors: list | None = None,
        learn_processors: list | None = None,
        freq: str = "day",
        process_type: str = DataHandlerLP.PTYPE_A,
        filter_pipe: list | None = None,
        inst_processors: list | None = None,
    ) -> None:
        expression, _ = _check_label(label)
        infer = list(DEFAULT_INFER_PROCESSORS if infer_processors is None else infer_processors)
        learn = list(DEFAULT_LEARN_PROCESSORS if learn_processors is None else learn_processors)
        if any(_needs_fit(p) for p in infer + learn) and (fit_start_time is None or fit_end_time is None):
            raise ValueError(
                f"{type(self).__name__}: a processor learns statistics but fit_start_time/fit_end_time are not set. "
                "Set them to the train segment so that valid and test data are never used for fitting."
            )
        self.label_name = label
        super().__init__(
            instruments=instruments,
            start_time=start_time,
            end_time=end_time,
            freq=freq,
            infer_processors=infer,
            learn_processors=learn,
            fit_start_time=fit_start_time,
            fit_end_time=fit_end_time,
            process_type=process_type,
            filter_pipe=filter_pipe,
            inst_processors=inst_processors,
            label=([expression], ["LABEL0"]),
        )
