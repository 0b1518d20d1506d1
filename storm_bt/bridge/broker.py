"""The env's market rules as backtrader broker settings, field by field from :class:`EnvConfig`."""

from __future__ import annotations

import backtrader as bt

from storm_bt.env.trading_env import EnvConfig

__all__ = ["make_cerebro"]


def make_cerebro(config: EnvConfig) -> bt.Cerebro:
    """A Cerebro whose broker charges and fills like the env.

    * ``initial_cash`` -> starting cash;
    * ``commission_bps`` -> percentage commission on the traded notional at the execution price;
    * ``slippage_bps`` -> percentage slippage on every market fill, opens included, not capped at
      the bar's high/low (the env does not cap either);
    * ``fill="next_open"`` -> cheat-on-open: the decision taken after bar t's close is sized and
      sent as a market-on-open order for bar t+1 (``next_open``); ``fill="close"`` -> cheat-on-close,
      filling at bar t's close like the paper.
    Orders are checked against cash when they execute (at the fill price), not when submitted.
    """
    cerebro = bt.Cerebro(stdstats=False, cheat_on_open=config.fill == "next_open")
    broker = cerebro.broker
    broker.setcash(config.initial_cash)
    broker.setcommission(
        commission=config.rules.commission, commtype=bt.CommInfoBase.COMM_PERC, stocklike=True, percabs=True
    )
    broker.set_slippage_perc(config.rules.slippage, slip_open=True, slip_limit=True, slip_match=True, slip_out=True)
    broker.set_checksubmit(False)
    if config.fill == "next_open":
        broker.set_coo(True)
    else:
        broker.set_coc(True)
    return cerebro
