"""Chunking a window ``(B, T, N, F)`` into time-series and cross-sectional tokens, and back.

* time-series (TS) chunk: one stock over ``p`` consecutive days -> ``p * F`` values;
  tokens are ordered time-major: token ``tau * N + s`` is block ``tau`` of stock ``s``;
* cross-sectional (CS) chunk: all stocks on one day -> ``N * F`` values; one token per day.

Missing stocks are zero-filled by the caller; the masks say which tokens carry data.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["cs_chunks", "cs_unchunk", "ts_chunks", "ts_token_mask", "ts_unchunk"]


def ts_chunks(x: Tensor, patch_days: int) -> Tensor:
    """(B, T, N, F) -> (B, T/p * N, p * F)."""
    b, t, n, f = x.shape
    x = x.reshape(b, t // patch_days, patch_days, n, f)  # (B, T/p, p, N, F)
    x = x.permute(0, 1, 3, 2, 4)  # (B, T/p, N, p, F)
    return x.reshape(b, (t // patch_days) * n, patch_days * f)


def ts_unchunk(tokens: Tensor, n_stocks: int, patch_days: int) -> Tensor:
    """(B, T/p * N, p * F) -> (B, T, N, F), the inverse of :func:`ts_chunks`."""
    b, length, pf = tokens.shape
    tp, f = length // n_stocks, pf // patch_days
    x = tokens.reshape(b, tp, n_stocks, patch_days, f).permute(0, 1, 3, 2, 4)  # (B, T/p, p, N, F)
    return x.reshape(b, tp * patch_days, n_stocks, f)


def ts_token_mask(mask: Tensor, patch_days: int) -> Tensor:
    """(B, T, N) bool -> (B, T/p * N): a TS token carries data if its stock has any of its p days."""
    b, t, n = mask.shape
    return mask.reshape(b, t // patch_days, patch_days, n).any(dim=2).reshape(b, (t // patch_days) * n)


def cs_chunks(x: Tensor) -> Tensor:
    """(B, T, N, F) -> (B, T, N * F)."""
    b, t, n, f = x.shape
    return x.reshape(b, t, n * f)


def cs_unchunk(tokens: Tensor, n_stocks: int) -> Tensor:
    """(B, T, N * F) -> (B, T, N, F)."""
    b, t, nf = tokens.shape
    return tokens.reshape(b, t, n_stocks, nf // n_stocks)
