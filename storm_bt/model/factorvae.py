"""FactorVAE (Duan et al., AAAI 2022) as a baseline: a GRU per stock, then the same factor module as STORM.

FactorVAE's encoder (portfolio returns -> posterior factors), decoder (alpha + beta z) and
predictor (attention of learnable factor queries over the stocks -> prior) are what
:class:`storm_bt.model.factor.FactorModule` implements; the difference to STORM is the feature
extractor: a GRU over each stock's own history instead of the dual VQ-VAE. Its objective is the
return likelihood under the posterior plus KL(posterior || prior); the MSE of the prior mean
(the score) is added with the same weight as in STORM so both are selected on the same terms.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from storm_bt.model.config import StormConfig
from storm_bt.model.factor import FactorModule
from storm_bt.model.network import WindowOutput, weighted_loss
from storm_bt.model.qlib_model import StormModel
from storm_bt.model.storm import (
    Storm,
    StormEmbeddings,
    check_window,
    cs_feature_zscore,
    return_target,
    return_terms,
    return_weights,
)

__all__ = ["FactorVAE", "FactorVAEModel"]


class FactorVAE(nn.Module):
    """Windows (B, T, N, F) with their mask in, per-stock scores and the FactorVAE loss out
    (a :class:`~storm_bt.model.network.WindowNetwork`)."""

    def __init__(self, cfg: StormConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.window = cfg.window
        self.loss_weights = return_weights(cfg)
        hidden = cfg.factor_hidden
        self.proj = nn.Sequential(nn.Linear(cfg.n_features, hidden), nn.LeakyReLU())
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.factor = FactorModule(cfg, hidden, summary_dim=hidden)

    @classmethod
    def configure(cls, n_stocks: int, n_features: int, **options: Any) -> StormConfig:
        """A STORM preset's window and factor settings (``preset``, ``ablation``, overrides), as for STORM."""
        return Storm.configure(n_stocks, n_features, **options)

    def forward(
        self, x: Tensor, mask: Tensor, y: Tensor | None = None, stock_ids: Tensor | None = None
    ) -> WindowOutput:
        check_window(self.cfg, x, mask, y, stock_ids)
        b, t, n, f = x.shape
        x = torch.nan_to_num(x) * mask.unsqueeze(-1)
        if self.cfg.feature_norm == "cs_zscore":
            x = cs_feature_zscore(x, mask)
        series = x.permute(0, 2, 1, 3).reshape(b * n, t, f)  # one sequence per (sample, stock)
        _, last = self.gru(self.proj(series))
        h = last[-1].view(b, n, -1)  # (B, N, H)
        present = mask[:, -1]
        labelled, target = return_target(self.cfg, y, present)
        out = self.factor(h, present, h.new_zeros(b, 0, h.shape[-1]), target, labelled, stock_ids)
        terms = return_terms(self.cfg, out, target, labelled)
        embeddings = StormEmbeddings(h, None, None, None, None)
        return WindowOutput(out.mu_prior, weighted_loss(terms, self.loss_weights), terms, embeddings)

    def encoders(self) -> dict[str, nn.Module]:
        """The feature extractor whose gradients per loss term the trainer logs."""
        return {"gru": self.gru}


class FactorVAEModel(StormModel):
    """FactorVAE behind Qlib's ``Model`` interface, sized by a STORM preset's factor settings."""

    network = FactorVAE
