"""Qlib data handlers for US stocks (used from ``qrun`` workflow YAMLs)."""

from handlers.alpha158_us import LABELS, Alpha158US, label_horizon

__all__ = ["LABELS", "Alpha158US", "label_horizon"]
