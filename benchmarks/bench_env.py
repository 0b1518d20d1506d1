"""Trading-environment throughput: single env steps/s, batched VecEnv agent-steps/s, against plain Python;
and backtrader bars/s when it replays a policy.

    python benchmarks/bench_env.py [--bars 3000] [--envs 256] [--steps 2000] [--repeats 7]

The reference is the same rules in plain Python: the kernel module's own source run by the
interpreter alone (every ``_nb`` function it calls interpreted too), one environment after another.
Until 2026-11 the reference interpreted ``execute_nb`` but called the compiled order sizing; that
figure is printed too (``sizing compiled``), so older ratios can be compared. Reference and
subjects are measured in interleaved rounds (``benchmarks/timing.py``); each figure and each ratio
is printed as its median with the range over rounds. Market: a random walk of ``--bars`` daily bars with 264-wide
features (the small preset's pooled STORM vector). Target (issue 16): the batched env's median
ratio at least 100x the plain-Python reference on a quiet machine.

The replay rows run one greedy SB3 PPO policy (untrained, the MLP the agents use) over all the
bars: once in the env (``rollout``) and once in backtrader (``replay``, factor vectors carried by
the feed), so the gap between the two engines is measured on the same work.
"""

from __future__ import annotations

import argparse
import math
import time
import types
from collections.abc import Callable

import numpy as np
from timing import interleaved, machine_line, spread

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


def interpreted(function: Callable) -> Callable:
    """A numba function's source run by the interpreter, with every numba function of its module it calls
    interpreted as well."""
    namespace = dict(function.py_func.__globals__)
    for name, value in namespace.items():
        if hasattr(value, "py_func"):
            namespace[name] = types.FunctionType(value.py_func.__code__, namespace, name)
    return namespace[function.__name__]


def plain_python(
    execute: Callable, opens: np.ndarray, closes: np.ndarray, envs: int, steps: int
) -> Callable[[], float]:
    """The rules run by ``execute`` in a Python loop over ``envs`` accounts stepped one by one: agent-steps/s."""
    rules = EnvConfig(commission_bps=10, slippage_bps=5).rules
    n_bars = closes.shape[1]

    def measure() -> float:
        rng = np.random.default_rng(1)
        cash, shares = [1e6] * envs, [0] * envs
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

    return measure


def single_env(features, opens, closes, steps: int) -> Callable[[], float]:
    """One gymnasium TradingEnv, random actions: steps/s."""
    env = TradingEnv(features[0], opens[0], closes[0])
    env.reset(seed=0)
    env.step(1)  # compile
    actions = np.random.default_rng(2).integers(0, 3, steps).tolist()

    def measure() -> float:
        env.reset(seed=0)
        start = time.perf_counter()
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
        return steps / (time.perf_counter() - start)

    return measure


def vec_env(features, opens, closes, envs: int, steps: int) -> Callable[[], float]:
    """TradingVecEnv with ``envs`` accounts on 252-bar random episodes, random actions: agent-steps/s."""
    vec = TradingVecEnv(features, opens, closes, n_envs=envs, config=EnvConfig(episode_length=252), seed=0)
    vec.reset()
    vec.step(np.ones(envs))  # compile
    actions = np.random.default_rng(3).integers(0, 3, (steps, envs))

    def measure() -> float:
        vec.reset()
        start = time.perf_counter()
        for row in actions:
            vec.step(row)
        return envs * steps / (time.perf_counter() - start)

    return measure


def policy_replays(features, opens, closes) -> tuple[Callable[[], float], Callable[[], float]]:
    """Bars per second of one greedy PPO policy over the whole market: (env rollout, backtrader replay)."""
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    env = TradingEnv(features[0], opens[0], closes[0])
    model = PPO("MlpPolicy", env, seed=0, device="cpu", policy_kwargs={"net_arch": [64, 64]})
    policy = lambda observation: model.predict(observation, deterministic=True)[0]  # noqa: E731
    dates = np.datetime64("2000-01-03") + np.arange(closes.shape[1]).astype("timedelta64[D]")

    def in_env() -> float:
        start = time.perf_counter()
        rollout(env, policy)
        return closes.shape[1] / (time.perf_counter() - start)

    def in_backtrader() -> float:
        start = time.perf_counter()
        replay(policy, dates, opens[0], closes[0], features[0])
        return closes.shape[1] / (time.perf_counter() - start)

    return in_env, in_backtrader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=3000)
    parser.add_argument("--envs", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    features, opens, closes = _market(args.bars, assets=5)
    steps = interleaved(
        {
            "reference": plain_python(interpreted(execute_nb), opens, closes, args.envs, max(1, args.steps // 40)),
            "sizing compiled": plain_python(execute_nb.py_func, opens, closes, args.envs, max(1, args.steps // 20)),
            "single": single_env(features, opens, closes, args.steps * 5),
            "batched": vec_env(features, opens, closes, args.envs, args.steps),
        },
        args.repeats,
    )
    in_env, in_backtrader = policy_replays(features, opens, closes)
    bars = interleaved({"env": in_env, "backtrader": in_backtrader}, max(1, args.repeats // 2))
    print(f"{machine_line(args.repeats)}; median [min .. max] over rounds")
    print(f"{'':34}{'per second':>34}{'x reference':>26}")
    print(f"{'plain-Python rules (reference)':34}{spread(steps['reference']):>34}  agent-steps")
    rows = (
        ("sizing compiled", "kernel source, sizing compiled"),
        ("single", "single TradingEnv (gymnasium)"),
        ("batched", f"TradingVecEnv, {args.envs} envs"),
    )
    for key, name in rows:
        ratio = spread(steps[key] / steps["reference"], ".1f")
        print(f"{name:34}{spread(steps[key]):>34}{ratio:>26}")
    print(f"{'PPO policy replay, env':34}{spread(bars['env']):>34}  bars")
    slower = spread(bars["env"] / bars["backtrader"], ".1f")
    print(f"{'PPO policy replay, backtrader':34}{spread(bars['backtrader']):>34}{slower:>26} slower than the env")


if __name__ == "__main__":
    main()
