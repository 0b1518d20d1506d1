"""STORM: dual VQ-VAE over time-series and cross-sectional chunks, fused, with a factor module.

Data flow for one window ``x`` (B, T, N, F) with its stock mask (B, T, N)::

    TS chunks (one stock, p days) --embed--> TS encoder --+--> cross-attention fusion --> VQ_ts --> TS decoder
    CS chunks (all stocks, 1 day) --embed--> CS encoder --+                           --> VQ_cs --> CS decoder
    per stock: [mean z_e_ts | mean z_q_ts] of its TS tokens, the day's CS summary, last-day stem features
        --> factor module (posterior with y in training, prior always) --> score = prior mean per stock

The module knows nothing about Qlib: windows in, scores and losses out.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from storm_bt.model.blocks import CrossFusion
from storm_bt.model.branch import CSBranch, TSBranch
from storm_bt.model.config import StormConfig
from storm_bt.model.factor import FactorModule
from storm_bt.model.losses import cs_standardize, gaussian_kl, gaussian_nll, info_nce, masked_mse
from storm_bt.model.quantizer import VQOutput

__all__ = ["Storm", "StormEmbeddings", "StormOutput"]


class StormEmbeddings(NamedTuple):
    """Factor embeddings of a window, for the factor store and the trading agent."""

    stock: Tensor  # (B, N, E) pooled per-stock vector given to the factor module
    ts_tokens: Tensor | None  # (B, T/p, N, 2D) [z_e | z_q] per TS chunk
    cs_tokens: Tensor | None  # (B, T, 2D) [z_e | z_q] per day
    ts_codes: Tensor | None  # (B, T/p, N)
    cs_codes: Tensor | None  # (B, T)


class StormOutput(NamedTuple):
    pred: Tensor  # (B, N) score: predicted mean of the cross-sectionally standardised next return
    loss: Tensor  # scalar, the weighted sum of loss_breakdown
    loss_breakdown: dict[str, Tensor]  # unweighted terms
    embeddings: StormEmbeddings


class Storm(nn.Module):
    """The STORM factor model; see the module docstring for the data flow."""

    def __init__(self, cfg: StormConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.ts = TSBranch(cfg) if cfg.use_ts else None
        self.cs = CSBranch(cfg) if cfg.use_cs else None
        self.fusion = CrossFusion(d, cfg.dec_heads, cfg.dropout) if cfg.fusion else None
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's learnable temperature
        self.stock_stem = nn.Linear(cfg.n_features, cfg.cs_stem_dim)
        stock_dim = 2 * d * (int(cfg.use_ts) + int(cfg.use_cs)) + cfg.cs_stem_dim
        self.factor = FactorModule(cfg, stock_dim, summary_dim=2 * d)

    def forward(self, x: Tensor, mask: Tensor, y: Tensor | None = None) -> StormOutput:
        """``x`` (B, T, N, F) features, ``mask`` (B, T, N) present stocks, ``y`` (B, N) next returns or None.

        Stocks absent on the last day of the window get no prediction target (masked in losses).
        """
        self._check_shapes(x, mask, y)
        x = torch.nan_to_num(x) * mask.unsqueeze(-1)  # (B, T, N, F), missing stocks are zeros
        terms: dict[str, Tensor] = {}
        enc, keep, vq = {}, {}, {}
        for name, branch in (("ts", self.ts), ("cs", self.cs)):
            if branch is not None:
                tokens, keep[name] = branch.tokens(x, mask)
                enc[name] = branch.encode(tokens, keep[name])  # (B, 1 + L, D)
        if self.fusion is not None:
            cls_keep = keep["ts"].new_ones(x.shape[0], 1)
            enc["ts"], enc["cs"] = self.fusion(
                enc["ts"], torch.cat([cls_keep, keep["ts"]], 1), enc["cs"], torch.cat([cls_keep, keep["cs"]], 1)
            )
        for name, branch in (("ts", self.ts), ("cs", self.cs)):
            if branch is None:
                continue
            vq[name] = branch.quantize(enc[name], keep[name])
            recon = branch.reconstruct(vq[name].quantized, keep[name])  # (B, T, N, F)
            terms[f"recon_{name}"] = masked_mse(recon, x, mask.unsqueeze(-1))
            self._vq_terms(terms, name, vq[name])
        if self.ts is not None and self.cs is not None:
            terms["contrastive"] = info_nce(enc["ts"][:, 0], enc["cs"][:, 0], self.logit_scale)
        embeddings, summaries = self._embeddings(x, enc, vq)
        stock_mask = mask[:, -1]  # (B, N) tradable at the window's last day
        target = None
        if y is not None:
            stock_mask = stock_mask & torch.isfinite(y)
            target = cs_standardize(torch.nan_to_num(y), stock_mask)
        out = self.factor(embeddings.stock, stock_mask, summaries, target)
        if target is not None:
            terms["kl"] = gaussian_kl(*out.z_post, *out.z_prior)
            terms["return"] = gaussian_nll(target, out.mu_post, out.sigma_post, stock_mask)
            terms["pred"] = masked_mse(out.mu_prior, target, stock_mask)
        loss = sum(self._weight(k) * v for k, v in terms.items())
        return StormOutput(out.mu_prior, loss, terms, embeddings)

    def _check_shapes(self, x: Tensor, mask: Tensor, y: Tensor | None) -> None:
        cfg = self.cfg
        expected = (cfg.window, cfg.n_stocks, cfg.n_features)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"Expected x of shape (B, {', '.join(map(str, expected))}), actual shape: {tuple(x.shape)}."
            )
        if mask.shape != x.shape[:3] or mask.dtype != torch.bool:
            raise ValueError(
                f"Expected a bool mask of shape {tuple(x.shape[:3])}, got {mask.dtype} {tuple(mask.shape)}."
            )
        if y is not None and y.shape != (x.shape[0], cfg.n_stocks):
            raise ValueError(f"Expected y of shape {(x.shape[0], cfg.n_stocks)}, actual shape: {tuple(y.shape)}.")

    @staticmethod
    def _vq_terms(terms: dict[str, Tensor], name: str, out: VQOutput) -> None:
        terms[f"codebook_{name}"] = out.codebook_loss
        terms[f"commit_{name}"] = out.commit_loss
        terms[f"diversity_{name}"] = out.diversity_loss
        terms[f"ortho_{name}"] = out.ortho_loss

    def _weight(self, term: str) -> float:
        return getattr(self.cfg, f"w_{term.split('_')[0]}")

    def _embeddings(self, x: Tensor, enc: dict[str, Tensor], vq: dict[str, VQOutput]) -> tuple[StormEmbeddings, Tensor]:
        cfg = self.cfg
        b = x.shape[0]
        parts, summaries = [], []
        ts_tokens = cs_tokens = ts_codes = cs_codes = None
        if "ts" in enc:
            ts_tokens = torch.cat([enc["ts"][:, 1:], vq["ts"].quantized], -1)  # (B, T/p * N, 2D)
            ts_tokens = ts_tokens.view(b, cfg.n_time_patches, cfg.n_stocks, -1)  # (B, T/p, N, 2D)
            ts_codes = vq["ts"].codes.view(b, cfg.n_time_patches, cfg.n_stocks)
            parts.append(ts_tokens.mean(dim=1))  # (B, N, 2D)
            summaries.append(torch.cat([enc["ts"][:, 0], vq["ts"].quantized.mean(1)], -1))  # (B, 2D)
        if "cs" in enc:
            cs_tokens = torch.cat([enc["cs"][:, 1:], vq["cs"].quantized], -1)  # (B, T, 2D)
            cs_codes = vq["cs"].codes
            summary = torch.cat([enc["cs"][:, 0], vq["cs"].quantized.mean(1)], -1)  # (B, 2D)
            parts.append(summary.unsqueeze(1).expand(-1, cfg.n_stocks, -1))
            summaries.append(summary)
        parts.append(self.stock_stem(x[:, -1]))  # (B, N, S) the stock's own last-day features
        stock = torch.cat(parts, dim=-1)
        return StormEmbeddings(stock, ts_tokens, cs_tokens, ts_codes, cs_codes), torch.stack(summaries, dim=1)
