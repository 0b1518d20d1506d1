"""Trading-environment throughput: single env steps/s, batched VecEnv agent-steps/s, against plain Python;
and backtrader bars/s when it replays a policy.

    python benchmarks/bench_env.py [--bars 3000] [--envs 256] [--steps 2000]

The reference, measured in the same run, is the same rules in plain Python: the kernel's own
source run uninterpreted by numba (``execute_nb.py_func``), one environment after another. Market:
a random walk of ``--bars`` daily bars with 264-wide features (the small preset's pooled STORM
vector). Target (issue 4): the batched env at least 100x the plain-Python reference.

The replay rows run one greedy SB3 PPO policy (untrained, the MLP the agents use) over all the
bars: once in the env (``rollout``) and once in backtrader (``replay``, factor vectors carried by
the feed), so the gap between the two engines is measured on the same work.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from storm_bt.bridge import replay
from storm_bt.env import EnvConfig, TradingEnv, TradingVecEnv
from storm_bt.env.kernel import execute_nb
from storm_bt.env.rollout import rollout

FEATURES = 264


def _market(bars: int, assets: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    closes = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, (assets, bars)), axis=1))
    opens = closes * np.exp(rng.normal(0, 0.005, (assets, bars)))
    return rng.standard_normal((assets, bars, FEATURES)).astype(np.float32), opens, closes


def plain_python_steps_per_s(opens: np.ndarray, closes: np.ndarray, envs: int, steps: int) -> float:
    """The same rules, interpreted, for ``envs`` accounts stepped one by one."""
    execute = execute_nb.py_func
    rules = EnvConfig(commission_bps=10, slippage_bps=5).rules
    rng = np.random.default_rng(1)
    cash, shares = [1e6] * envs, [0] * envs
    n_bars = closes.shape[1]
    start = time.perf_counter()
    for step in range(steps):
        t = step % (n_bars - 1)
        actions = rng.integers(0, 3, envs)
        for i in range(envs):
            a = i % len(closes)
            before = cash[i] + shares[i] * closes[a, t]
            cash[i], shares[i], _, _, _, after, _ = execute(
                t, cash[i], shares[i], float(actions[i]), opens[a], closes[a], rules
            )
            math.log(after / before)
    return envs * steps / (time.perf_counter() - start)


def single_env_steps_per_s(features, opens, closes, steps: int) -> float:
    env = TradingEnv(features[0], opens[0], closes[0])
    env.reset(seed=0)
    env.step(1)  # compile
    rng = np.random.default_rng(2)
    actions = rng.integers(0, 3, steps)
    env.reset(seed=0)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(int(a))
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def vec_env_steps_per_s(features, opens, closes, envs: int, steps: int) -> float:
    vec = TradingVecEnv(features, opens, closes, n_envs=envs, config=EnvConfig(episode_length=252), seed=0)
    vec.reset()
    vec.step(np.ones(envs))  # compile
    rng = np.random.default_rng(3)
    actions = rng.integers(0, 3, (steps, envs))
    start = time.perf_counter()
    for row in actions:
        vec.step(row)
    return envs * steps / (time.perf_counter() - start)


def policy_replay_bars_per_s(features, opens, closes) -> tuple[float, float]:
    """Bars per second of one greedy PPO policy over the whole market: (env rollout, backtrader replay)."""
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    env = TradingEnv(features[0], opens[0], closes[0])
    model = PPO("MlpPolicy", env, seed=0, device="cpu", policy_kwargs={"net_arch": [64, 64]})
    policy = lambda observation: model.predict(observation, deterministic=True)[0]  # noqa: E731
    dates = np.datetime64("2000-01-03") + np.arange(closes.shape[1]).astype("timedelta64[D]")
    start = time.perf_counter()
    rollout(env, policy)
    in_env = closes.shape[1] / (time.perf_counter() - start)
    start = time.perf_counter()
    replay(policy, dates, opens[0], closes[0], features[0])
    in_backtrader = closes.shape[1] / (time.perf_counter() - start)
    return in_env, in_backtrader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=3000)
    parser.add_argument("--envs", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    features, opens, closes = _market(args.bars, assets=5)
    reference = plain_python_steps_per_s(opens, closes, envs=args.envs, steps=max(1, args.steps // 20))
    single = single_env_steps_per_s(features, opens, closes, args.steps * 5)
    batched = vec_env_steps_per_s(features, opens, closes, args.envs, args.steps)
    print(f"plain-Python rules (reference): {reference:12,.0f} agent-steps/s")
    print(f"single TradingEnv (gymnasium):  {single:12,.0f} steps/s        ({single / reference:6.1f}x reference)")
    name = f"TradingVecEnv, {args.envs} envs:"
    print(f"{name:32}{batched:12,.0f} agent-steps/s  ({batched / reference:6.1f}x reference)")
    in_env, in_backtrader = policy_replay_bars_per_s(features, opens, closes)
    print(f"PPO policy replay, env:         {in_env:12,.0f} bars/s")
    slower = in_env / in_backtrader
    print(f"PPO policy replay, backtrader:  {in_backtrader:12,.0f} bars/s         ({slower:6.1f}x slower than the env)")


if __name__ == "__main__":
    main()
