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
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from storm_bt.model.blocks import CrossFusion
from storm_bt.model.branch import CSBranch, TSBranch
from storm_bt.model.config import StormConfig
from storm_bt.model.factor import FactorModule, FactorOutput
from storm_bt.model.losses import (
    correlation_loss,
    cs_rank_gauss,
    cs_standardize,
    gaussian_kl,
    gaussian_nll,
    info_nce,
    masked_mean,
    masked_mse,
)
from storm_bt.model.network import WindowOutput, weighted_loss
from storm_bt.model.quantizer import VectorQuantizer, VQOutput

__all__ = [
    "Storm",
    "StormEmbeddings",
    "check_window",
    "cs_feature_zscore",
    "return_target",
    "return_terms",
    "return_weights",
]


class StormEmbeddings(NamedTuple):
    """Factor embeddings of a window, for the factor store and the trading agent."""

    stock: Tensor  # (B, N, E) pooled per-stock vector given to the factor module
    ts_tokens: Tensor | None  # (B, T/p, N, 2D) [z_e | z_q] per TS chunk
    cs_tokens: Tensor | None  # (B, T, 2D) [z_e | z_q] per day
    ts_codes: Tensor | None  # (B, T/p, N)
    cs_codes: Tensor | None  # (B, T)


class Storm(nn.Module):
    """The STORM factor model (a :class:`~storm_bt.model.network.WindowNetwork`); see the module
    docstring for the data flow. Its score is the prior mean of the cross-sectionally standardised
    next return."""

    def __init__(self, cfg: StormConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.window = cfg.window
        d = cfg.d_model
        self.ts = TSBranch(cfg) if cfg.use_ts else None
        self.cs = CSBranch(cfg) if cfg.use_cs else None
        self.fusion = CrossFusion(d, cfg.dec_heads, cfg.dropout) if cfg.fusion else None
        if cfg.use_ts and cfg.use_cs:  # only the contrastive term uses it; an unused parameter breaks DDP
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's learnable temperature
        self.stock_stem = nn.Linear(cfg.n_features, cfg.cs_stem_dim)
        stock_dim = 2 * d * (int(cfg.use_ts) + int(cfg.use_cs)) + cfg.cs_stem_dim
        self.factor = FactorModule(cfg, stock_dim, summary_dim=2 * d)
        self.loss_weights = self._loss_weights()

    @classmethod
    def configure(
        cls, n_stocks: int, n_features: int, preset: str = "small", ablation: str | None = None, **overrides: Any
    ) -> StormConfig:
        """A preset (``small``, ``paper``) sized to the data, then an optional ablation, then overrides."""
        cfg = StormConfig.preset(preset, n_stocks=n_stocks, n_features=n_features, **overrides)
        return cfg.ablation(ablation) if ablation else cfg

    def forward(
        self, x: Tensor, mask: Tensor, y: Tensor | None = None, stock_ids: Tensor | None = None
    ) -> WindowOutput:
        """``x`` (B, T, N, F) features, ``mask`` (B, T, N) present stocks, ``y`` (B, N) next returns or None,
        ``stock_ids`` (N,) the stock in each column when the trainer shuffled them (None: column s is stock s).

        Stocks absent on the last day of the window get no score. Which stocks have a label only
        decides which count in the losses: the score of one stock never depends on whether
        another one's future return is known.
        """
        check_window(self.cfg, x, mask, y, stock_ids)
        x = torch.nan_to_num(x) * mask.unsqueeze(-1)  # (B, T, N, F), missing stocks are zeros
        if self.cfg.feature_norm == "cs_zscore":
            x = cs_feature_zscore(x, mask)
        terms: dict[str, Tensor] = {}
        enc, keep, vq = {}, {}, {}
        for name, branch in self._branches():
            tokens, keep[name] = branch.tokens(x, mask)
            enc[name] = branch.encode(tokens, keep[name])  # (B, 1 + L, D)
        if self.fusion is not None:
            cls_keep = keep["ts"].new_ones(x.shape[0], 1)
            enc["ts"], enc["cs"] = self.fusion(
                enc["ts"], torch.cat([cls_keep, keep["ts"]], 1), enc["cs"], torch.cat([cls_keep, keep["cs"]], 1)
            )
        for name, branch in self._branches():
            vq[name] = branch.quantize(enc[name], keep[name])
            recon = branch.reconstruct(vq[name].quantized, keep[name])  # (B, T, N, F)
            terms[f"recon_{name}"] = masked_mse(recon, x, mask.unsqueeze(-1))
            self._vq_terms(terms, name, vq[name])
        if self.ts is not None and self.cs is not None:
            terms["contrastive"] = info_nce(enc["ts"][:, 0], enc["cs"][:, 0], self.logit_scale)
        embeddings, summaries = self._embeddings(x, mask, enc, keep, vq)
        present = mask[:, -1]  # (B, N) tradable at the window's last day
        labelled, target = return_target(self.cfg, y, present)
        out = self.factor(embeddings.stock, present, summaries, target, labelled, stock_ids)
        terms.update(return_terms(self.cfg, out, target, labelled))
        return WindowOutput(out.mu_prior, weighted_loss(terms, self.loss_weights), terms, embeddings)

    def _loss_weights(self) -> dict[str, float]:
        """Each term this configuration produces -> its weight (the branch terms once per branch)."""
        cfg = self.cfg
        weights = return_weights(cfg)
        for name, _ in self._branches():
            weights |= {
                f"recon_{name}": cfg.w_recon,
                f"codebook_{name}": cfg.w_codebook,
                f"commit_{name}": cfg.w_commit,
                f"diversity_{name}": cfg.w_diversity,
                f"ortho_{name}": cfg.w_ortho,
            }
        if cfg.use_ts and cfg.use_cs:
            weights["contrastive"] = cfg.w_contrastive
        return weights

    def _branches(self) -> list[tuple[str, nn.Module]]:
        return [(name, branch) for name, branch in (("ts", self.ts), ("cs", self.cs)) if branch is not None]

    def encoders(self) -> dict[str, nn.Module]:
        """The feature extractors whose gradients per loss term the trainer logs."""
        return {f"{name}_encoder": branch.encoder for name, branch in self._branches()}

    def quantizers(self) -> dict[str, VectorQuantizer]:
        """The codebooks by branch, whose usage the trainer records per epoch."""
        return {name: branch.quantizer for name, branch in self._branches()}

    def pretraining(self) -> tuple[list[nn.Parameter], dict[str, float]]:
        """The first stage of a two-stage schedule: the VQ-VAE branches (with their fusion and the
        contrastive temperature) learn the representation from their self-supervised terms before
        the factor module sees a return; those terms keep their weights, the return terms weigh 0."""
        heads = {id(p) for module in (self.factor, self.stock_stem) for p in module.parameters()}
        returns = return_weights(self.cfg)
        weights = {name: 0.0 if name in returns else weight for name, weight in self.loss_weights.items()}
        return [p for p in self.parameters() if id(p) not in heads], weights

    @staticmethod
    def _vq_terms(terms: dict[str, Tensor], name: str, out: VQOutput) -> None:
        terms[f"codebook_{name}"] = out.codebook_loss
        terms[f"commit_{name}"] = out.commit_loss
        terms[f"diversity_{name}"] = out.diversity_loss
        terms[f"ortho_{name}"] = out.ortho_loss

    def _embeddings(
        self, x: Tensor, mask: Tensor, enc: dict[str, Tensor], keep: dict[str, Tensor], vq: dict[str, VQOutput]
    ) -> tuple[StormEmbeddings, Tensor]:
        """Pooled per-stock vectors and branch summaries; pooling averages over present tokens only."""
        cfg = self.cfg
        b = x.shape[0]
        parts, summaries = [], []
        ts_tokens = cs_tokens = ts_codes = cs_codes = None
        if "ts" in enc:
            ts_tokens = torch.cat([enc["ts"][:, 1:], vq["ts"].quantized], -1)  # (B, T/p * N, 2D)
            ts_tokens = ts_tokens.view(b, cfg.n_time_patches, cfg.n_stocks, -1)  # (B, T/p, N, 2D)
            ts_codes = vq["ts"].codes.view(b, cfg.n_time_patches, cfg.n_stocks)
            ts_keep = keep["ts"].view(b, cfg.n_time_patches, cfg.n_stocks)
            parts.append(masked_mean(ts_tokens, ts_keep, dim=1))  # (B, N, 2D)
            quantized = masked_mean(vq["ts"].quantized, keep["ts"], dim=1)
            summaries.append(torch.cat([enc["ts"][:, 0], quantized], -1))  # (B, 2D)
        if "cs" in enc:
            cs_tokens = torch.cat([enc["cs"][:, 1:], vq["cs"].quantized], -1)  # (B, T, 2D)
            cs_codes = vq["cs"].codes
            summary = torch.cat([enc["cs"][:, 0], masked_mean(vq["cs"].quantized, keep["cs"], dim=1)], -1)  # (B, 2D)
            parts.append(summary.unsqueeze(1).expand(-1, cfg.n_stocks, -1))
            summaries.append(summary)
        parts.append(self.stock_stem(x[:, -1]))  # (B, N, S) the stock's own last-day features
        stock = torch.cat(parts, dim=-1)
        return StormEmbeddings(stock, ts_tokens, cs_tokens, ts_codes, cs_codes), torch.stack(summaries, dim=1)


def check_window(cfg: StormConfig, x: Tensor, mask: Tensor, y: Tensor | None, stock_ids: Tensor | None) -> None:
    """Refuse a batch whose shapes do not match the configuration, naming what is wrong."""
    expected = (cfg.window, cfg.n_stocks, cfg.n_features)
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"Expected x of shape (B, {', '.join(map(str, expected))}), actual shape: {tuple(x.shape)}.")
    if mask.shape != x.shape[:3] or mask.dtype != torch.bool:
        raise ValueError(f"Expected a bool mask of shape {tuple(x.shape[:3])}, got {mask.dtype} {tuple(mask.shape)}.")
    if y is not None and y.shape != (x.shape[0], cfg.n_stocks):
        raise ValueError(f"Expected y of shape {(x.shape[0], cfg.n_stocks)}, actual shape: {tuple(y.shape)}.")
    if stock_ids is not None and (stock_ids.shape != (cfg.n_stocks,) or stock_ids.is_floating_point()):
        raise ValueError(
            f"Expected stock_ids as {cfg.n_stocks} integer slots, got {stock_ids.dtype} {tuple(stock_ids.shape)}."
        )


def cs_feature_zscore(x: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """Each feature z-scored across the stocks present on the same day: (B, T, N, F), 0 where absent.

    Uses only that day's rows, so it adds no look-ahead; it removes the market-wide level that a
    cross-sectional score cannot use.
    """
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, T, N, 1)
    count = m.sum(dim=2, keepdim=True).clamp_min(1.0)
    mean = (x * m).sum(dim=2, keepdim=True) / count
    var = (((x - mean) * m) ** 2).sum(dim=2, keepdim=True) / count
    return (x - mean) / torch.sqrt(var + eps) * m


def return_target(cfg: StormConfig, y: Tensor | None, present: Tensor) -> tuple[Tensor, Tensor | None]:
    """The stocks that count in the return losses, and their target (``cfg.label_transform`` of ``y``)."""
    if y is None:
        return present, None
    labelled = present & torch.isfinite(y)
    transform = cs_rank_gauss if cfg.label_transform == "rank_gauss" else cs_standardize
    return labelled, transform(torch.nan_to_num(y), labelled)


def return_terms(cfg: StormConfig, out: FactorOutput, target: Tensor | None, labelled: Tensor) -> dict[str, Tensor]:
    """The factor module's loss terms (none at inference): shared by STORM and FactorVAE."""
    if target is None:
        return {}
    terms = {
        "kl": gaussian_kl(*out.z_post, *out.z_prior),
        "return": gaussian_nll(target, out.mu_post, out.sigma_post, labelled),
        "pred": masked_mse(out.mu_prior, target, labelled),
    }
    if cfg.w_corr:
        terms["corr"] = correlation_loss(out.mu_prior, target, labelled)
    return terms


def return_weights(cfg: StormConfig) -> dict[str, float]:
    """The weights of :func:`return_terms`' terms."""
    weights = {"kl": cfg.w_kl, "return": cfg.w_return, "pred": cfg.w_pred}
    if cfg.w_corr:
        weights["corr"] = cfg.w_corr
    return weights
