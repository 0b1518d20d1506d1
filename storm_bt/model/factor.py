"""Factor module: posterior and prior over latent factor returns, and the return predictor.

Following FactorVAE, with the reference code's bugs fixed: attention runs inside each sample
(learnable factor queries over that sample's stock tokens and its branch summaries), and the
score is the predicted mean, never a sample.

* posterior q(z | h, y): stocks form K_f long-only portfolios (softmax over present stocks);
  their returns on the standardised labels give mu_post, sigma_post (training only);
* prior p(z | h): K_f learnable queries attend over the stock tokens and the summary ([CLS])
  tokens, then an MLP gives mu_prior, sigma_prior;
* an optional learned vector per stock (``stock_embedding``) joins each stock's features: the
  one place where a ticker's identity enters on purpose, and it follows the stock when the
  trainer shuffles the stock axis;
* decoder: y = alpha + beta z, with mu_y = mu_alpha + beta mu_z and
  sigma_y^2 = sigma_alpha^2 + beta^2 sigma_z^2 (per stock).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from storm_bt.model.config import StormConfig

__all__ = ["FactorModule", "FactorOutput"]


class FactorOutput(NamedTuple):
    mu_prior: Tensor  # (B, N) predicted standardised return from the prior: the score
    sigma_prior: Tensor  # (B, N)
    mu_post: Tensor | None  # (B, N) reconstruction from the posterior (training, needs y)
    sigma_post: Tensor | None
    z_post: tuple[Tensor, Tensor] | None  # (mu, sigma) of the factor posterior, (B, K_f) each
    z_prior: tuple[Tensor, Tensor]  # (mu, sigma) of the factor prior, (B, K_f) each


def _mlp(d_in: int, hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.LeakyReLU(), nn.Dropout(dropout), nn.Linear(hidden, d_out))


def _mean_sigma(raw: Tensor) -> tuple[Tensor, Tensor]:
    mu, s = raw.unbind(dim=-1)
    return mu, F.softplus(s) + 1e-4


class FactorModule(nn.Module):
    """Maps per-stock latent features (and summary tokens) to a return distribution per stock."""

    def __init__(self, cfg: StormConfig, d_in: int, summary_dim: int) -> None:
        super().__init__()
        h, k, p = cfg.factor_hidden, cfg.n_factors, cfg.dropout
        self.identity = nn.Embedding(cfg.n_stocks, cfg.stock_embedding) if cfg.stock_embedding else None
        self.stock = nn.Sequential(nn.Linear(d_in + cfg.stock_embedding, h), nn.LeakyReLU(), nn.Dropout(p))
        self.summary = nn.Linear(summary_dim, h)
        self.portfolio = nn.Linear(h, k)
        self.posterior = _mlp(k, h, 2 * k, p)
        self.queries = nn.Parameter(torch.randn(1, k, h) * 0.02)
        self.attention = nn.MultiheadAttention(h, cfg.factor_heads, dropout=p, batch_first=True)
        self.prior = _mlp(h, h, 2, p)
        self.alpha = _mlp(h, h, 2, p)
        self.beta = nn.Linear(h, k)

    def forward(
        self,
        stocks: Tensor,
        present: Tensor,
        summaries: Tensor,
        y: Tensor | None,
        labelled: Tensor | None = None,
        stock_ids: Tensor | None = None,
    ) -> FactorOutput:
        """Factor distributions and per-stock return distributions.

        The prior (hence the score) sees the stocks present on the day, the same set in training
        and at inference; only the posterior, which reads the returns, uses ``labelled``.

        :param stocks: (B, N, d_in) per-stock latent features.
        :param present: (B, N) stocks that exist on the window's last day.
        :param summaries: (B, S, summary_dim) [CLS]-style summary tokens of the branches.
        :param y: (B, N) cross-sectionally standardised next returns, or None at inference.
        :param labelled: (B, N) present stocks whose ``y`` is known (default: ``present``).
        :param stock_ids: (N,) the stock (panel slot) in each column, when the columns were shuffled;
            None: column s is stock s. Only the stock embedding reads it.
        """
        if self.identity is not None:
            ids = torch.arange(stocks.shape[1], device=stocks.device) if stock_ids is None else stock_ids
            stocks = torch.cat([stocks, self.identity(ids).expand(stocks.shape[0], -1, -1)], dim=-1)
        h = self.stock(stocks)  # (B, N, H)
        keys = torch.cat([h, self.summary(summaries)], dim=1)  # (B, N + S, H)
        keep = torch.cat([present, present.new_ones(summaries.shape[:2])], dim=1)
        queries = self.queries.expand(h.shape[0], -1, -1)  # (B, K, H)
        attended = self.attention(queries, keys, keys, key_padding_mask=~keep, need_weights=False)[0]
        z_prior = _mean_sigma(self.prior(attended).view(h.shape[0], -1, 2))  # (B, K) each
        alpha = _mean_sigma(self.alpha(h))  # (B, N) each
        beta = self.beta(h)  # (B, N, K)
        mu_prior, sigma_prior = self._decode(alpha, beta, z_prior)
        if y is None:
            return FactorOutput(mu_prior, sigma_prior, None, None, None, z_prior)
        labelled = present if labelled is None else labelled
        weights = self.portfolio(h).masked_fill(~labelled.unsqueeze(-1), float("-inf")).softmax(dim=1)  # (B, N, K)
        factor_returns = torch.einsum("bnk,bn->bk", weights, y)  # (B, K)
        z_post = _mean_sigma(self.posterior(factor_returns).view(h.shape[0], -1, 2))
        mu_post, sigma_post = self._decode(alpha, beta, z_post)
        return FactorOutput(mu_prior, sigma_prior, mu_post, sigma_post, z_post, z_prior)

    @staticmethod
    def _decode(alpha: tuple[Tensor, Tensor], beta: Tensor, z: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        mu = alpha[0] + torch.einsum("bnk,bk->bn", beta, z[0])
        var = alpha[1] ** 2 + torch.einsum("bnk,bk->bn", beta**2, z[1] ** 2)
        return mu, torch.sqrt(var)
