"""backtrader as the realistic referee: feeds with factor vectors, the env's rules as broker
settings, a policy-driven strategy, and analyzers that report through :mod:`storm_bt.metrics`."""

from storm_bt.bridge.compat import patch_backtrader

patch_backtrader()

from storm_bt.bridge.analyzers import PaperMetrics  # noqa: E402
from storm_bt.bridge.broker import make_cerebro  # noqa: E402
from storm_bt.bridge.feeds import factor_feed  # noqa: E402
from storm_bt.bridge.replay import ActionSequence, Replay, replay  # noqa: E402

__all__ = ["ActionSequence", "PaperMetrics", "Replay", "factor_feed", "make_cerebro", "patch_backtrader", "replay"]
