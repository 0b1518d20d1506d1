"""``StormConfig``: every size, switch and loss weight of the STORM model, with named presets."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["ABLATIONS", "FEATURE_NORMS", "LABEL_TRANSFORMS", "PRESETS", "StormConfig"]

LABEL_TRANSFORMS = ("zscore", "rank_gauss")
"""How a day's returns become the target: z-scores, or normal quantiles of their ranks (outliers tamed)."""
FEATURE_NORMS = ("none", "cs_zscore")
"""Feature scaling inside the model: as the handler gives them, or z-scored across the day's present stocks."""


@dataclass(frozen=True)
class StormConfig:
    """Configuration of :class:`storm_bt.model.storm.Storm`.

    Shapes: a sample is a window of ``window`` days x ``n_stocks`` stocks x ``n_features``
    features, with a mask for stocks that are missing on a day.
    """

    n_stocks: int = 29  # N: stocks per window (the universe; missing ones are masked)
    n_features: int = 158  # F: features per (day, stock), Alpha158 by default
    window: int = 64  # T: days of history per sample
    patch_days: int = 4  # p: days per time-series chunk (one stock over p days)
    d_model: int = 256  # token width of both branches
    cs_stem_dim: int = 32  # per-(day, stock) projection before the cross-sectional chunk
    ts_depth: int = 4  # paper and reference code: 4 layers for the time-series encoder
    ts_heads: int = 4
    cs_depth: int = 4  # the reference code's 4 (what gives the paper's 15.2M parameters); the paper's text says 2
    cs_heads: int = 8
    dec_depth: int = 2  # reconstruction decoders of both branches
    dec_heads: int = 4
    mlp_ratio: int = 4  # hidden width of transformer MLPs, in multiples of d_model
    dropout: float = 0.0  # in every transformer block and the factor module's MLPs
    codebook_size: int = 512  # K entries per codebook (G = 2 codebooks, one per branch)
    dead_code_steps: int = 200  # a code unused for this many training steps is re-seeded from the batch
    use_ts: bool = True  # ablations: a single branch
    use_cs: bool = True
    fusion: bool = True  # cross-attention between TS and CS tokens (needs both branches)
    # inputs and target (see LABEL_TRANSFORMS, FEATURE_NORMS)
    feature_norm: str = "none"
    label_transform: str = "zscore"
    shared_time_positions: bool = False  # TS tokens of one time block share a position: no per-stock-slot identity
    stock_embedding: int = 0  # width of a learned vector per stock given to the factor module (0: none)
    n_factors: int = 64  # K_f latent factors of the factor module
    factor_hidden: int = 512  # width of the factor module's MLPs and attention (the reference's 512)
    factor_heads: int = 8
    # loss weights (every term is configuration)
    w_recon: float = 1.0  # reconstruction of the input features, per branch
    w_codebook: float = 1.0  # ||sg[z_e] - z_q||^2
    w_commit: float = 0.25  # ||z_e - sg[z_q]||^2
    w_diversity: float = 0.1  # negative entropy of average code usage
    w_ortho: float = 0.1  # ||l2(E) l2(E)^T - I||_F^2 / K^2
    w_contrastive: float = 0.1  # InfoNCE between the TS and CS summaries of a sample
    w_kl: float = 0.1  # KL(posterior || prior) of factor returns
    w_return: float = 1.0  # Gaussian NLL of cross-sectionally standardised returns (posterior path)
    w_pred: float = 1.0  # MSE of the prior mean (the score) against standardised returns
    w_corr: float = 0.0  # 1 - the day's Pearson correlation of the score with the target, averaged over days

    def __post_init__(self) -> None:
        if self.window % self.patch_days:
            raise ValueError(f"window ({self.window}) must be a multiple of patch_days ({self.patch_days}).")
        if not (self.use_ts or self.use_cs):
            raise ValueError("At least one branch is needed: use_ts and use_cs are both False.")
        if self.fusion and not (self.use_ts and self.use_cs):
            raise ValueError("fusion=True needs both branches; set fusion=False for a single-branch ablation.")
        for heads_name in ("ts_heads", "cs_heads", "dec_heads"):
            if self.d_model % getattr(self, heads_name):
                raise ValueError(
                    f"d_model ({self.d_model}) must be divisible by {heads_name} ({getattr(self, heads_name)})."
                )
        if self.factor_hidden % self.factor_heads:
            raise ValueError(
                f"factor_hidden ({self.factor_hidden}) must be divisible by factor_heads ({self.factor_heads})."
            )
        for name, allowed in (("feature_norm", FEATURE_NORMS), ("label_transform", LABEL_TRANSFORMS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.stock_embedding < 0:
            raise ValueError(f"stock_embedding must be >= 0 (0: no stock embedding), got {self.stock_embedding}.")
        if min(self.n_stocks, self.n_features, self.codebook_size, self.n_factors) < 1:
            raise ValueError("n_stocks, n_features, codebook_size and n_factors must be positive.")

    @property
    def n_time_patches(self) -> int:
        """Time-series chunks per stock: window / patch_days."""
        return self.window // self.patch_days

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> StormConfig:
        """A named preset (``paper`` or ``small``), then an optional ablation, then overrides."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(PRESETS)}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"Unknown StormConfig key(s) {unknown}.")
        return replace(cls(**PRESETS[name]), **overrides)

    def ablation(self, name: str) -> StormConfig:
        """This config with one of :data:`ABLATIONS` applied."""
        if name not in ABLATIONS:
            raise ValueError(f"Unknown ablation {name!r}; expected one of {sorted(ABLATIONS)}.")
        return replace(self, **ABLATIONS[name])


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},  # the defaults are the paper's sizes: about 14.9M parameters on DJ30 with Alpha158 (paper: 15.2M)
    "small": {  # trains on 2 CPU cores in minutes
        "window": 16,
        "patch_days": 4,
        "d_model": 64,
        "cs_stem_dim": 8,
        "ts_depth": 2,
        "ts_heads": 4,
        "cs_depth": 1,
        "cs_heads": 4,
        "dec_depth": 1,
        "dec_heads": 4,
        "mlp_ratio": 2,
        "codebook_size": 64,
        "dead_code_steps": 50,
        "n_factors": 16,
        "factor_hidden": 64,
        "factor_heads": 4,
    },
}

ABLATIONS: dict[str, dict[str, Any]] = {
    "ts_only": {"use_cs": False, "fusion": False},
    "cs_only": {"use_ts": False, "fusion": False},
    "no_fusion": {"fusion": False},
    "no_div_ortho": {"w_diversity": 0.0, "w_ortho": 0.0},
    "k256": {"codebook_size": 256},
    "k512": {"codebook_size": 512},
    "k1024": {"codebook_size": 1024},
}
