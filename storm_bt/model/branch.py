"""The two VQ-VAE branches: chunk -> embed -> encode -> (fuse) -> quantise -> decode -> reconstruct.

``TSBranch`` sees one stock over ``p`` days per token, ``CSBranch`` all stocks on one day per
token. Both expose the same three steps so that :class:`storm_bt.model.storm.Storm` can fuse
their encodings between ``encode`` and ``quantize``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from storm_bt.model.blocks import TokenEncoder
from storm_bt.model.chunking import cs_chunks, cs_unchunk, ts_chunks, ts_token_mask, ts_unchunk
from storm_bt.model.config import StormConfig
from storm_bt.model.quantizer import VectorQuantizer, VQOutput

__all__ = ["CSBranch", "TSBranch"]


class _Branch(nn.Module):
    """What both branches share: encoder with [CLS], quantiser, reconstruction decoder."""

    def __init__(
        self, cfg: StormConfig, n_tokens: int, depth: int, heads: int, chunk_dim: int, positions: Tensor | None = None
    ) -> None:
        super().__init__()
        d = cfg.d_model
        self.encoder = TokenEncoder(d, n_tokens, depth, heads, cfg.mlp_ratio, cfg.dropout, positions)
        self.quantizer = VectorQuantizer(cfg.codebook_size, d, cfg.dead_code_steps)
        self.decoder = TokenEncoder(d, n_tokens, cfg.dec_depth, cfg.dec_heads, cfg.mlp_ratio, cfg.dropout)
        self.recon_head = nn.Linear(d, chunk_dim)

    def encode(self, tokens: Tensor, token_mask: Tensor) -> Tensor:
        """(B, L, D) -> (B, 1 + L, D), [CLS] first."""
        return self.encoder(tokens, token_mask)

    def quantize(self, encoded: Tensor, token_mask: Tensor) -> VQOutput:
        """Quantise the chunk tokens (not the [CLS] summary): (B, 1 + L, D) -> codes for (B, L)."""
        return self.quantizer(encoded[:, 1:], token_mask)

    def decode_chunks(self, quantized: Tensor, token_mask: Tensor) -> Tensor:
        """(B, L, D) quantised tokens -> (B, L, chunk_dim) reconstructed chunks."""
        return self.recon_head(self.decoder(quantized, token_mask)[:, 1:])


class TSBranch(_Branch):
    """Time-series chunks: token ``tau * N + s`` is stock ``s`` over days ``tau*p .. tau*p + p - 1``.

    With ``shared_time_positions`` the position says only ``tau``, so the encoder cannot tell
    which stock slot a chunk came from (the decoder keeps per-token positions to reconstruct).
    """

    def __init__(self, cfg: StormConfig) -> None:
        chunk = cfg.patch_days * cfg.n_features
        n_tokens = cfg.n_time_patches * cfg.n_stocks
        positions = torch.arange(n_tokens) // cfg.n_stocks if cfg.shared_time_positions else None
        super().__init__(cfg, n_tokens, cfg.ts_depth, cfg.ts_heads, chunk, positions)
        self.cfg = cfg
        self.embed = nn.Linear(chunk, cfg.d_model)

    def tokens(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, N, F), (B, T, N) -> tokens (B, T/p * N, D) and their mask (B, T/p * N)."""
        return self.embed(ts_chunks(x, self.cfg.patch_days)), ts_token_mask(mask, self.cfg.patch_days)

    def reconstruct(self, quantized: Tensor, token_mask: Tensor) -> Tensor:
        """(B, T/p * N, D) -> (B, T, N, F)."""
        return ts_unchunk(self.decode_chunks(quantized, token_mask), self.cfg.n_stocks, self.cfg.patch_days)


class CSBranch(_Branch):
    """Cross-sectional chunks: token ``t`` is every stock on day ``t`` (features first projected by a stem)."""

    def __init__(self, cfg: StormConfig) -> None:
        super().__init__(cfg, cfg.window, cfg.cs_depth, cfg.cs_heads, cfg.n_stocks * cfg.n_features)
        self.cfg = cfg
        self.stem = nn.Linear(cfg.n_features, cfg.cs_stem_dim)
        self.embed = nn.Linear(cfg.n_stocks * cfg.cs_stem_dim, cfg.d_model)

    def tokens(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, N, F), (B, T, N) -> tokens (B, T, D) and their mask (B, T): a day with any stock."""
        stem = self.stem(x) * mask.unsqueeze(-1)  # (B, T, N, S); missing stocks stay zero
        return self.embed(cs_chunks(stem)), mask.any(dim=-1)

    def reconstruct(self, quantized: Tensor, token_mask: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, N, F)."""
        return cs_unchunk(self.decode_chunks(quantized, token_mask), self.cfg.n_stocks)
