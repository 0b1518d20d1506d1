"""Vector quantiser: a learnable codebook, nearest-neighbour codes, straight-through gradients.

One scheme only (the reference mixed EMA overwrites with gradient updates, which made its
orthogonality term inert): the codebook is an ``nn.Parameter`` trained by the codebook loss and
by the diversity and orthogonality regularisers, and the optimiser must exclude it from weight
decay. Codes unused for ``dead_code_steps`` training steps are re-seeded from encoder outputs of
the current batch, consistently across processes under DDP.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["VQOutput", "VectorQuantizer", "diversity_loss", "orthogonality_loss"]


class VQOutput(NamedTuple):
    quantized: Tensor  # (B, L, D) straight-through: forward = codebook vector, backward = identity to z_e
    codes: Tensor  # (B, L) index of the nearest code
    codebook_loss: Tensor  # ||sg[z_e] - z_q||^2: moves codes to the encoder outputs
    commit_loss: Tensor  # ||z_e - sg[z_q]||^2: keeps the encoder near its codes
    diversity_loss: Tensor  # sum_k p_k log p_k of the average soft assignment (-entropy)
    ortho_loss: Tensor  # ||l2(E) l2(E)^T - I||_F^2 / K^2


def orthogonality_loss(codebook: Tensor) -> Tensor:
    """Squared Frobenius distance of the codes' cosine-similarity matrix to the identity, over K^2."""
    normed = F.normalize(codebook, dim=-1)  # (K, D)
    gram = normed @ normed.t()  # (K, K)
    eye = torch.eye(codebook.shape[0], device=codebook.device, dtype=codebook.dtype)
    return ((gram - eye) ** 2).sum() / codebook.shape[0] ** 2


def diversity_loss(sq_dist: Tensor, temperature: float = 1.0) -> Tensor:
    """Negative entropy of the average soft code assignment ``softmax(-d^2 / t)`` over tokens.

    :param sq_dist: (M, K) squared distances of M tokens to the K codes.
    """
    avg = torch.softmax(-sq_dist / temperature, dim=-1).mean(dim=0)  # (K,)
    return (avg * torch.log(avg.clamp_min(1e-10))).sum()


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantiser over a learnable ``(K, D)`` codebook."""

    def __init__(self, codebook_size: int, dim: int, dead_code_steps: int = 200) -> None:
        super().__init__()
        self.codebook = nn.Parameter(torch.empty(codebook_size, dim))
        nn.init.kaiming_uniform_(self.codebook, a=math.sqrt(5))
        self.dead_code_steps = dead_code_steps
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.long))
        self.register_buffer("usage", torch.zeros(codebook_size, dtype=torch.long))  # counts since reset_usage()

    def reset_usage(self) -> Tensor:
        """Code counts accumulated since the last call (for per-epoch usage statistics), then zero them."""
        counts = self.usage.clone()
        self.usage.zero_()
        return counts

    def forward(self, z: Tensor, mask: Tensor | None = None) -> VQOutput:
        """Quantise ``z`` (B, L, D); ``mask`` (B, L) marks the tokens that count in losses and usage."""
        b, length, d = z.shape
        flat = z.reshape(b * length, d)  # (M, D)
        valid = torch.ones(b * length, dtype=torch.bool, device=z.device) if mask is None else mask.reshape(-1)
        sq_dist = torch.cdist(flat, self.codebook).pow(2)  # (M, K)
        codes = sq_dist.argmin(dim=-1)  # (M,)
        z_q = self.codebook[codes]  # (M, D)
        zv, qv = flat[valid], z_q[valid]
        codebook_loss = F.mse_loss(qv, zv.detach())
        commit_loss = F.mse_loss(zv, qv.detach())
        div = diversity_loss(sq_dist[valid])
        ortho = orthogonality_loss(self.codebook)
        if self.training:
            self._track_usage(codes[valid], zv.detach())
        quantized = flat + (z_q - flat).detach()
        return VQOutput(quantized.view(b, length, d), codes.view(b, length), codebook_loss, commit_loss, div, ortho)

    @torch.no_grad()
    def _track_usage(self, codes: Tensor, samples: Tensor) -> None:
        counts = torch.bincount(codes, minlength=self.codebook.shape[0])
        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            dist.all_reduce(counts)  # every rank sees the same usage, hence the same dead codes
        self.usage += counts
        self.steps_unused = torch.where(counts > 0, torch.zeros_like(self.steps_unused), self.steps_unused + 1)
        dead = (self.steps_unused >= self.dead_code_steps).nonzero().flatten()
        if len(dead) == 0:
            return
        if len(samples):
            picks = torch.randint(len(samples), (len(dead),))  # CPU generator: the one a checkpoint restores
            fresh = samples[picks.to(samples.device)]
        else:  # nothing to seed from on this rank; rank 0's choice arrives by broadcast
            fresh = self.codebook.data[dead].clone()
        if distributed:
            dist.broadcast(fresh, src=0)
        self.codebook.data[dead] = fresh
        self.steps_unused[dead] = 0
