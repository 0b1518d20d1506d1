"""A Qlib record that adds the paper's portfolio metrics (APY, CW, CR, ASR, MDD, AVO) to a run.

It reads the daily report that ``PortAnaRecord`` saved and computes the metrics with
:func:`storm_bt.metrics.portfolio_metrics` for the strategy (net of costs) and the benchmark, so
every workflow reports the same numbers with the same definitions, next to Qlib's own (which
annualise arithmetically over 238 days).
"""

from __future__ import annotations

import math

import pandas as pd
from qlib.workflow.record_temp import PortAnaRecord, RecordTemp

from storm_bt.metrics import portfolio_metrics

__all__ = ["PaperMetricsRecord"]


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
