"""Qlib processors that a workflow names in its handler's ``learn_processors``.

``ShuffleLabel`` is a placebo: it permutes the training labels across stocks within each day, so
a model trained on it can learn nothing true about the cross-section. Its out-of-sample RankIC
t-stat shows what the significance tests report for a model without skill.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from qlib.data.dataset.processor import Processor

__all__ = ["ShuffleLabel"]


class ShuffleLabel(Processor):
    """Permute the label columns across instruments within each datetime, with a fixed seed.

    Learning only (``is_for_infer`` is False): predictions are scored on the true labels.
    """

    def __init__(self, seed: int = 0, fields_group: str = "label") -> None:
        self.seed = seed
        self.fields_group = fields_group

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        rng = np.random.default_rng(self.seed)
        labels = df[self.fields_group].to_numpy(copy=True)
        days = df.index.get_level_values("datetime")
        for rows in pd.Series(np.arange(len(df))).groupby(days.to_numpy()).indices.values():
            labels[rows] = labels[rng.permutation(rows)]
        df[self.fields_group] = labels
        return df

    def is_for_infer(self) -> bool:
        return False
