"""Replay one trained trading agent over the test segment in backtrader, next to the env.

    python experiments/backtrader_policy_replay.py --run runs/trade_dj30 --stock AAPL --agent ppo_storm --seed 0

RUN is a folder written by ``storm-bt trade train``. The policy, its feature scaling and the
market rules are the ones it was trained with; backtrader gets the factor vectors through its
data feed and asks the policy for an action after every close. Prints both engines' metrics,
their largest daily gap, and the fills backtrader made.
"""

from __future__ import annotations

import argparse

import pandas as pd

from storm_bt.pipelines.trading import replay_agent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="folder written by `storm-bt trade train`")
    parser.add_argument("--stock", required=True)
    parser.add_argument("--agent", required=True, help="agent name from the trading config, or buy_and_hold")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    episode, referee = replay_agent(args.run, args.stock.upper(), args.agent, args.seed)
    print(
        pd.DataFrame({"env": episode.metrics, "backtrader": referee.metrics}).T.to_string(float_format="{:.4f}".format)
    )
    gap = (referee.values / episode.values - 1).abs().max()
    print(f"daily value, largest relative gap between the engines: {gap:.1e}")
    print(f"backtrader fills ({len(referee.fills)}):")
    print(referee.fills.to_string(index=False, max_rows=20))


if __name__ == "__main__":
    main()
