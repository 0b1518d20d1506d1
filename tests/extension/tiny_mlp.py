"""The smallest model that plugs into storm_bt: an MLP over each stock's last few days.

It is what a new model needs and nothing more: a dataclass config sized by ``configure``, a
``forward`` that returns a :class:`~storm_bt.model.network.WindowOutput`, and its loss weights.
``workflow_tiny_mlp_synth.yaml`` beside it trains it under ``qrun`` with :class:`storm_bt.model.WindowModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from storm_bt.model.losses import cs_standardize, masked_mse
from storm_bt.model.network import WindowOutput, weighted_loss


@dataclass(frozen=True)
class TinyMLPConfig:
    n_stocks: int
    n_features: int
    window: int = 4
    hidden: int = 16


class TinyMLP(nn.Module):
    """Score = MLP(the stock's last ``window`` days of features); loss = MSE to the day's z-scored returns."""

    def __init__(self, cfg: TinyMLPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.window = cfg.window
        self.loss_weights = {"mse": 1.0}
        inputs = cfg.window * cfg.n_features
        self.mlp = nn.Sequential(nn.Linear(inputs, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 1))

    @classmethod
    def configure(cls, n_stocks: int, n_features: int, **options: Any) -> TinyMLPConfig:
        return TinyMLPConfig(n_stocks, n_features, **options)

    def forward(self, x: Tensor, mask: Tensor, y: Tensor | None = None) -> WindowOutput:
        b, t, n, f = x.shape
        history = (torch.nan_to_num(x) * mask.unsqueeze(-1)).permute(0, 2, 1, 3).reshape(b, n, t * f)
        pred = self.mlp(history).squeeze(-1)  # (B, N)
        if y is None:
            return WindowOutput(pred, pred.new_zeros(()), {})
        labelled = mask[:, -1] & torch.isfinite(y)
        terms = {"mse": masked_mse(pred, cs_standardize(torch.nan_to_num(y), labelled), labelled)}
        return WindowOutput(pred, weighted_loss(terms, self.loss_weights), terms)
