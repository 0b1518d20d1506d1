"""Qlib records of storm_bt: the paper's portfolio metrics, and signals judged on a narrower universe.

``PaperMetricsRecord`` reads the daily report that ``PortAnaRecord`` saved and computes the metrics
(APY, CW, CR, ASR, MDD, AVO) with :func:`storm_bt.metrics.portfolio_metrics` for the strategy (net of
costs) and the benchmark, so every workflow reports the same numbers with the same definitions, next
to Qlib's own (which annualise arithmetically over 238 days).

``UniverseSignalRecord`` is Qlib's ``SignalRecord`` for a model trained on a pooled universe: it keeps
the predictions and labels of one universe's names, so that every analysis after it (IC, TopK-Drop,
paired tests) judges the model on the same names as models trained on that universe alone.
"""

from __future__ import annotations

import math

import pandas as pd
from qlib.data import D
from qlib.utils import get_callable_kwargs
from qlib.workflow.record_temp import PortAnaRecord, RecordTemp, SignalRecord

from storm_bt.metrics import portfolio_metrics

__all__ = ["PaperMetricsRecord", "UniverseSignalRecord", "is_signal_record"]


def paper_metrics_table(report: pd.DataFrame) -> pd.DataFrame:
    """Metrics of the strategy and of the benchmark from a Qlib portfolio report.

    Qlib's ``return`` is the account's change before costs and ``cost`` the costs paid that day,
    both over the previous day's account value: ``return - cost`` is the net daily return.
    """
    missing = {"return", "cost", "bench"} - set(report.columns)
    if missing:
        raise ValueError(f"Portfolio report lacks column(s) {sorted(missing)}; expected Qlib's report_normal.")
    return pd.DataFrame(
        {
            "strategy": portfolio_metrics(report["return"] - report["cost"]),
            "market": portfolio_metrics(report["bench"]),
        }
    ).T


class PaperMetricsRecord(RecordTemp):
    """Logs ``paper.<metric>`` and ``paper.market.<metric>`` and saves the table as ``paper_metrics.pkl``."""

    artifact_path = "paper_metrics"
    depend_cls = PortAnaRecord

    def __init__(self, recorder, freq: str = "1day") -> None:
        super().__init__(recorder=recorder)
        self.freq = freq

    def generate(self, **kwargs) -> None:
        report = self.load(f"report_normal_{self.freq}.pkl")
        table = paper_metrics_table(report)
        metrics = {f"paper.{k}": v for k, v in table.loc["strategy"].items()}
        metrics.update({f"paper.market.{k}": v for k, v in table.loc["market"].items()})
        self.recorder.log_metrics(**{k: float(v) for k, v in metrics.items() if math.isfinite(v)})
        self.save(**{"paper_metrics.pkl": table})
        print(f"Paper metrics ({self.freq}, net of costs, 252-day annualisation):\n{table.round(4)}")

    def list(self) -> list[str]:
        return ["paper_metrics.pkl"]


class UniverseSignalRecord(SignalRecord):
    """``SignalRecord`` whose ``pred.pkl`` and ``label.pkl`` hold only the names of ``universe``.

    The model predicts its whole dataset (a cross-sectional model needs the cross-section it was
    trained on); a name of ``universe`` that it did not predict is an error, since the model would
    then be judged on fewer names than the models it is compared with.
    """

    def __init__(self, model=None, dataset=None, recorder=None, universe: str = "") -> None:
        super().__init__(model=model, dataset=dataset, recorder=recorder)
        if not universe:
            raise ValueError("UniverseSignalRecord needs universe: the name of the universe to judge on.")
        self.universe = universe

    def generate(self, **kwargs) -> None:
        pred = self.model.predict(self.dataset)
        pred = pred.to_frame("score") if isinstance(pred, pd.Series) else pred
        start, end = self.dataset.segments["test"]
        names = set(D.list_instruments(D.instruments(self.universe), start, end, as_list=True))
        predicted = set(pred.index.get_level_values("instrument"))
        if not names:
            raise ValueError(f"universe {self.universe!r} has no instrument over the test segment {start}..{end}.")
        if missing := sorted(names - predicted):
            raise ValueError(
                f"the model predicted no score for {len(missing)} names of universe {self.universe!r} "
                f"({', '.join(missing[:10])}): train it on a universe that contains {self.universe!r}."
            )
        label = self.generate_label(self.dataset)
        self.save(**{"pred.pkl": _members(pred, names), "label.pkl": _members(label, names)})


def _members(frame: pd.DataFrame, names: set[str]) -> pd.DataFrame:
    return frame[frame.index.get_level_values("instrument").isin(names)]


def is_signal_record(record: dict) -> bool:
    """Whether a workflow's record config is Qlib's ``SignalRecord`` or a subclass of it."""
    klass, _ = get_callable_kwargs(record, default_module="qlib.workflow.record_temp")
    return isinstance(klass, type) and issubclass(klass, SignalRecord)
