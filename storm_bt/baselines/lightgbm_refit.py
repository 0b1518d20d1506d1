"""LightGBM refitted on train and valid: the baseline's counterpart of ``WindowModel(refit=True)``.

Qlib's ``LGBModel`` stops boosting when the valid segment's loss stops falling and keeps that model,
so the year nearest the test is only validated on. Refitting learns from it too, with the number of
rounds chosen on it; a STORM refit is only judged fairly against a baseline that sees the same days.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import pandas as pd
from qlib.contrib.model.gbdt import LGBModel
from qlib.data.dataset import DatasetH
from qlib.data.dataset.handler import DataHandlerLP
from qlib.workflow import R

__all__ = ["RefitLGBModel"]


class RefitLGBModel(LGBModel):
    """``LGBModel`` (same parameters) whose final model is trained on train and valid together for the
    number of rounds that early stopping chose on valid."""

    def fit(self, dataset: DatasetH, reweighter: Any = None, **kwargs: Any) -> None:
        if reweighter is not None:
            raise ValueError(f"{type(self).__name__} does not support sample reweighting.")
        if "valid" not in dataset.segments:
            raise ValueError(f"{type(self).__name__} chooses its rounds on a valid segment; the dataset has none.")
        super().fit(dataset, **kwargs)  # refuses more than one label column
        rounds = self.model.best_iteration or self.model.current_iteration()
        segments = dataset.prepare(["train", "valid"], col_set=["feature", "label"], data_key=DataHandlerLP.DK_L)
        frame = pd.concat(segments)
        both = lgb.Dataset(frame["feature"].to_numpy(), label=frame["label"].iloc[:, 0].to_numpy())
        self.model = lgb.train(self.params, both, rounds)
        R.log_params(refit_rounds=rounds)
