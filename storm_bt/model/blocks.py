"""Transformer building blocks shared by both branches (pre-LN, GELU, PyTorch's own layers)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["CrossFusion", "TokenEncoder", "checkpoint_activations", "sdpa_attention", "transformer"]


@contextmanager
def sdpa_attention() -> Iterator[None]:
    """Attention through ``scaled_dot_product_attention`` in inference too, the caller's setting restored.

    In eval mode without autocast, PyTorch's transformer layers take a native fast path that
    materialises every (L x L) attention matrix: 40 GiB for 64 paper-preset SP500 windows (6,529
    tokens), an out-of-memory error on an 80 GB GPU where training (memory-efficient SDPA) fits.
    """
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def transformer(d_model: int, depth: int, heads: int, mlp_ratio: int, dropout: float) -> nn.TransformerEncoder:
    """``depth`` pre-LN blocks ``x + MHSA(LN(x))``, ``x + MLP(LN(x))`` and a final LayerNorm."""
    layer = nn.TransformerEncoderLayer(
        d_model,
        heads,
        dim_feedforward=mlp_ratio * d_model,
        dropout=dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)


class TokenEncoder(nn.Module):
    """A [CLS] token, learned positions and a transformer over one branch's tokens.

    ``positions`` maps each token to a position id (default: its own index); tokens that share
    an id share a learned position, e.g. all stocks' chunks of one time block. With ``checkpointing``
    on, training keeps only each layer's input and recomputes the layer in the backward pass.
    """

    checkpointing = False

    def __init__(
        self,
        d_model: int,
        n_tokens: int,
        depth: int,
        heads: int,
        mlp_ratio: int,
        dropout: float,
        positions: Tensor | None = None,
    ) -> None:
        super().__init__()
        ids = torch.arange(n_tokens) if positions is None else positions.long()
        if ids.shape != (n_tokens,) or int(ids.min()) < 0:
            raise ValueError(f"positions must be {n_tokens} non-negative ids, got shape {tuple(ids.shape)}.")
        self.register_buffer("position_ids", torch.cat([ids.new_zeros(1), ids + 1]), persistent=False)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos = nn.Parameter(torch.zeros(1, int(ids.max()) + 2, d_model))
        nn.init.trunc_normal_(self.cls, std=0.02)
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = transformer(d_model, depth, heads, mlp_ratio, dropout)

    def forward(self, tokens: Tensor, token_mask: Tensor) -> Tensor:
        """(B, L, D) tokens, (B, L) mask -> (B, 1 + L, D) with the [CLS] summary at position 0."""
        b = tokens.shape[0]
        x = torch.cat([self.cls.expand(b, -1, -1), tokens], dim=1) + self.pos[:, self.position_ids]  # (B, 1 + L, D)
        keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=tokens.device), token_mask], dim=1)
        with sdpa_attention():
            if not (self.checkpointing and self.training and torch.is_grad_enabled()):
                return self.blocks(x, src_key_padding_mask=~keep)
            for layer in self.blocks.layers:
                x = checkpoint(layer, x, src_key_padding_mask=~keep, use_reentrant=False)
            return self.blocks.norm(x)


def checkpoint_activations(model: nn.Module) -> int:
    """Turn on activation checkpointing in every :class:`TokenEncoder` of ``model``; returns how many.

    Attention activations grow with the square of the tokens (6,529 per window for the paper
    preset on SP500): recomputing them layer by layer in the backward pass trades about one more
    forward pass for most of that memory."""
    encoders = [module for module in model.modules() if isinstance(module, TokenEncoder)]
    for encoder in encoders:
        encoder.checkpointing = True
    return len(encoders)


class CrossFusion(nn.Module):
    """Cross-attention both ways: TS tokens attend to CS tokens and CS tokens to TS tokens."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_ts, self.norm_cs = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ts_from_cs = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.cs_from_ts = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)

    def forward(self, ts: Tensor, ts_keep: Tensor, cs: Tensor, cs_keep: Tensor) -> tuple[Tensor, Tensor]:
        """(B, Lt, D), (B, Lt) and (B, Lc, D), (B, Lc) -> fused (B, Lt, D), (B, Lc, D)."""
        q_ts, q_cs = self.norm_ts(ts), self.norm_cs(cs)
        ts_out = ts + self.ts_from_cs(q_ts, q_cs, q_cs, key_padding_mask=~cs_keep, need_weights=False)[0]
        cs_out = cs + self.cs_from_ts(q_cs, q_ts, q_ts, key_padding_mask=~ts_keep, need_weights=False)[0]
        return ts_out, cs_out
