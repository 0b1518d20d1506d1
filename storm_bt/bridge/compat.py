"""Make the frozen backtrader 1.9.78.123 run on Python 3.10+.

``LineIterator.bindlines`` (alias ``bind2lines``, used to wire a sub-indicator's lines into its
owner) still looks up ``collections.Iterable``, which Python 3.10 removed. Rather than putting
that name back into the standard library for everyone, the module that needs it gets its own
``collections`` with ``Iterable`` restored. Importing :mod:`storm_bt.bridge` applies it.
"""

from __future__ import annotations

import collections
import collections.abc
import types

import backtrader.lineiterator

__all__ = ["patch_backtrader"]


def patch_backtrader() -> None:
    """Give ``backtrader.lineiterator`` a ``collections`` that still has ``Iterable`` (idempotent)."""
    module = backtrader.lineiterator
    if hasattr(module.collections, "Iterable"):
        return
    legacy = types.ModuleType("collections")
    legacy.__dict__.update(vars(collections))
    legacy.Iterable = collections.abc.Iterable
    module.collections = legacy
