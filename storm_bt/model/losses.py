"""Loss terms of STORM as pure functions, each checked against a hand computation in the tests."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cs_standardize", "gaussian_kl", "gaussian_nll", "info_nce", "masked_mse"]


def cs_standardize(y: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Z-score returns across the stocks of each sample: (B, N) -> (B, N), 0 where masked.

    Daily returns are ~1e-2; standardised, the return loss is on the scale of the other terms.
    """
    m = mask.to(y.dtype)
    count = m.sum(dim=1, keepdim=True).clamp_min(1.0)
    mean = (y * m).sum(dim=1, keepdim=True) / count
    var = (((y - mean) * m) ** 2).sum(dim=1, keepdim=True) / count
    return (y - mean) / torch.sqrt(var + eps) * m


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
    """Symmetric InfoNCE (CLIP) between two (B, D) views of the same B samples; 0 when B < 2."""
    if a.shape[0] < 2:
        return a.new_zeros(())
    logits = logit_scale.exp() * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()  # (B, B)
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
