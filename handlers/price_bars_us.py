"""Daily price bars for US stocks: the raw path a window model reads, instead of Alpha158's summaries.

Alpha158 condenses up to 60 sessions into each day's 158 features, which a model that sees a window
of days reads again and again. Qlib's own model zoo feeds its sequence models (GRU, ALSTM) the raw
price path instead (Alpha360), and they score higher on it there. These features give a window
model that path one day at a time: each session's bar relative to the previous close, so a window of
them is stationary and the model finds the patterns itself. Label choice and the train-only fit of
the processors are :class:`~storm_bt.handlers.alpha158_us.Alpha158US`'s.
"""

from __future__ import annotations

from storm_bt.handlers.alpha158_us import Alpha158US

__all__ = ["BAR_FIELDS", "PriceBarsUS"]

BAR_FIELDS: dict[str, str] = {
    "RET": "$close/Ref($close, 1) - 1",
    "OPEN": "$open/Ref($close, 1) - 1",
    "HIGH": "$high/Ref($close, 1) - 1",
    "LOW": "$low/Ref($close, 1) - 1",
    "VWAP": "$vwap/Ref($close, 1) - 1",
    "VOLUME": "$volume/(Mean($volume, 20) + 1e-12) - 1",
}
"""Feature name -> Qlib expression of session t; each reads t and earlier sessions only."""


class PriceBarsUS(Alpha158US):
    """Each session's open, high, low, close and vwap against the previous close, and its relative volume.

    Takes :class:`~storm_bt.handlers.alpha158_us.Alpha158US`'s arguments (label, fit range, processors).
    """

    def get_feature_config(self) -> tuple[list[str], list[str]]:
        return list(BAR_FIELDS.values()), list(BAR_FIELDS)
