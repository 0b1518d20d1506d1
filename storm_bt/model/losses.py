"""Loss terms of STORM as pure functions, each checked against a hand computation in the tests."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MAX_LOGIT_SCALE",
    "correlation_loss",
    "cs_rank_gauss",
    "cs_standardize",
    "gaussian_kl",
    "gaussian_nll",
    "info_nce",
    "masked_mean",
    "masked_mse",
]

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's cap on the learned temperature: logits at most 100 x cosine


def cs_standardize(y: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Z-score returns across the stocks of each sample: (B, N) -> (B, N), 0 where masked.

    Daily returns are ~1e-2; standardised, the return loss is on the scale of the other terms.
    """
    m = mask.to(y.dtype)
    count = m.sum(dim=1, keepdim=True).clamp_min(1.0)
    mean = (y * m).sum(dim=1, keepdim=True) / count
    var = (((y - mean) * m) ** 2).sum(dim=1, keepdim=True) / count
    return (y - mean) / torch.sqrt(var + eps) * m


def cs_rank_gauss(y: Tensor, mask: Tensor) -> Tensor:
    """Normal quantiles of the ranks of each sample's returns: (B, N) -> (B, N), 0 where masked.

    The i-th smallest of n present returns maps to Phi^-1((i - 0.5) / n): a heavy-tailed day
    weighs no more than a calm one, and ties keep the order of the stocks (stable sort).
    """
    filled = torch.where(mask, y, torch.full_like(y, float("inf")))  # masked stocks sort last
    order = filled.argsort(dim=1, stable=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(y.shape[1], device=y.device).expand_as(order))
    count = mask.sum(dim=1, keepdim=True).clamp_min(1).to(y.dtype)
    quantile = (ranks.to(y.dtype) + 0.5) / count
    return torch.special.ndtri(quantile.clamp(max=1 - 1e-6)) * mask


def correlation_loss(score: Tensor, target: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """1 - the Pearson correlation of score and target across each sample's masked stocks, averaged.

    Samples with fewer than two stocks do not count. The score's scale is free, only its order
    across stocks matters: what RankIC / IC measure.
    """
    m = mask.to(score.dtype)
    count = m.sum(dim=1)
    usable = count >= 2
    if not bool(usable.any()):
        return score.new_zeros(())
    centred = []
    for v in (score, target):
        mean = (v * m).sum(dim=1, keepdim=True) / count.clamp_min(1.0).unsqueeze(1)
        centred.append((v - mean) * m)
    a, b = centred
    corr = (a * b).sum(1) / torch.sqrt((a**2).sum(1) * (b**2).sum(1) + eps)
    return 1.0 - corr[usable].mean()


def masked_mean(values: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Mean of ``values`` over ``dim`` counting only entries where ``mask`` is true (0 when none are).

    ``mask`` has ``values``' shape without its last (feature) axis.
    """
    m = mask.unsqueeze(-1).to(values.dtype)
    return (values * m).sum(dim) / m.sum(dim).clamp_min(1.0)


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the entries where ``mask`` (broadcastable to ``pred``) is true."""
    m = mask.expand_as(pred).to(pred.dtype)
    return ((pred - target) ** 2 * m).sum() / m.sum().clamp_min(1.0)


def gaussian_kl(mu_q: Tensor, sigma_q: Tensor, mu_p: Tensor, sigma_p: Tensor) -> Tensor:
    """KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)) summed over the last axis, averaged over the batch."""
    kl = torch.log(sigma_p / sigma_q) + (sigma_q**2 + (mu_q - mu_p) ** 2) / (2 * sigma_p**2) - 0.5
    return kl.sum(dim=-1).mean()


def gaussian_nll(y: Tensor, mu: Tensor, sigma: Tensor, mask: Tensor) -> Tensor:
    """Negative log-likelihood of ``y`` under N(mu, sigma^2), averaged over unmasked entries."""
    nll = torch.log(sigma) + 0.5 * ((y - mu) / sigma) ** 2 + 0.5 * math.log(2 * math.pi)
    m = mask.to(y.dtype)
    return (nll * m).sum() / m.sum().clamp_min(1.0)


def info_nce(a: Tensor, b: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE (CLIP) between two (B, D) views of the same B samples; 0 when B < 2.

    The temperature is ``exp(logit_scale)`` capped at 100, as in CLIP: uncapped, it can grow
    until the logits overflow.
    """
    if a.shape[0] < 2:
        return a.new_zeros(()) + 0.0 * logit_scale  # keeps the parameter in the graph (DDP needs every gradient)
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()  # (B, B)
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
