"""Trading strategies: Qlib portfolio strategies and backtrader strategies driven by storm_bt models."""

__all__: list[str] = []
