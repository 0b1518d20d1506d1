"""Trading agents under one protocol: train on the train segment, keep the checkpoint that does
best on the valid segment, and leave the test segment to a single evaluation.

Agents are stable-baselines3 algorithms on the batched :class:`TradingVecEnv` (PPO and DQN with
the paper's {sell all, hold, buy all} actions, SAC with a continuous target position), plus Buy &
Hold, which needs no training. Validation runs the deterministic policy over the whole valid
segment every ``eval_every`` steps and scores it by final log wealth (the sum of the rewards the
agent maximises); the best checkpoint is ``best.zip``.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from storm_bt.agents.states import STATES, StockMarket
from storm_bt.env.enums import Action
from storm_bt.env.rollout import Episode, rollout
from storm_bt.env.trading_env import EnvConfig, TradingEnv
from storm_bt.env.vec_env import TradingVecEnv
from storm_bt.io import atomic_write_bytes, atomic_write_text

__all__ = ["BUY_AND_HOLD", "AgentSpec", "Policy", "buy_and_hold", "load_policy", "train_agent"]

Policy = Callable[[np.ndarray], Any]
ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "dqn": DQN, "sac": SAC}
ACTIONS = {"ppo": "discrete", "dqn": "discrete", "sac": "continuous", "buy_and_hold": "discrete"}
# Many accounts per env step and few, large gradient steps: a 64x64 MLP costs about the same per call
# whatever the batch, so training time goes with the number of calls. `python benchmarks/bench_agents.py
# --algo ppo|dqn|sac` trains with these and with the settings before them (issue 16) and prints both.
N_ENVS = {"ppo": 64, "dqn": 16, "sac": 16, "buy_and_hold": 1}
DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 32, "batch_size": 1024, "n_epochs": 10, "learning_rate": 3e-4, "ent_coef": 0.01,
            "policy_kwargs": {"net_arch": [64, 64]}},
    "dqn": {"learning_starts": 1000, "buffer_size": 50_000, "exploration_fraction": 0.3, "target_update_interval": 1000,
            "train_freq": 1, "gradient_steps": 1, "batch_size": 128, "policy_kwargs": {"net_arch": [64, 64]}},
    "sac": {"learning_starts": 1000, "buffer_size": 50_000, "train_freq": 1, "gradient_steps": 1, "batch_size": 512,
            "policy_kwargs": {"net_arch": [64, 64]}},
}  # fmt: skip


@dataclass(frozen=True)
class AgentSpec:
    """One agent of the protocol: algorithm, what it sees, and how long it trains."""

    name: str
    algo: str  # ppo | dqn | sac | buy_and_hold
    state: str = "factors"  # factors (pooled STORM vector) | tokens (STORM's full token set) | prices (no STORM)
    timesteps: int = 50_000
    n_envs: int | None = None  # parallel training accounts (random start dates); default N_ENVS[algo]
    episode_length: int = 252  # bars per training episode
    eval_every: int = 5_000  # training steps between validations
    hyperparams: dict[str, Any] = field(default_factory=dict)  # overrides of DEFAULTS[algo]

    def __post_init__(self) -> None:
        if self.algo not in ACTIONS:
            raise ValueError(f"Agent {self.name!r}: algo must be one of {sorted(ACTIONS)}, got {self.algo!r}.")
        if self.n_envs is None:
            object.__setattr__(self, "n_envs", N_ENVS[self.algo])
        if self.state not in STATES:
            raise ValueError(f"Agent {self.name!r}: state must be one of {STATES}, got {self.state!r}.")
        if self.algo != "buy_and_hold" and (self.timesteps < 1 or self.eval_every < 1 or self.n_envs < 1):
            raise ValueError(f"Agent {self.name!r}: timesteps, eval_every and n_envs must be positive.")

    def env_config(self, base: EnvConfig, training: bool = False) -> EnvConfig:
        """The market rules with this agent's action mode (and random episodes while training)."""
        return replace(base, action=ACTIONS[self.algo], episode_length=self.episode_length if training else None)


BUY_AND_HOLD = AgentSpec(name="buy_and_hold", algo="buy_and_hold", state="prices")


def buy_and_hold(observation: np.ndarray) -> int:
    """Buy with all cash at the first fill and keep the shares."""
    return Action.BUY_ALL


def greedy(model: BaseAlgorithm) -> Policy:
    """The model's deterministic action for one observation."""
    return lambda observation: model.predict(observation, deterministic=True)[0]


def evaluate(policy: Policy, market: StockMarket, config: EnvConfig) -> Episode:
    """Run the policy over the whole of ``market`` (no random start)."""
    env = TradingEnv(market.features, market.opens, market.closes, market.dates, replace(config, episode_length=None))
    return rollout(env, policy)


def log_wealth(episode: Episode) -> float:
    return math.log(episode.values.iloc[-1] / episode.values.iloc[0])


class _SelectOnValid(BaseCallback):
    """Every ``every`` training steps: score the greedy policy on valid, keep the best checkpoint."""

    def __init__(self, valid: StockMarket, config: EnvConfig, every: int, best_path: Path) -> None:
        super().__init__()
        self.valid, self.config, self.every, self.best_path = valid, config, every, best_path
        self.curve: list[dict[str, float]] = []
        self._next = 0

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._validate()
            self._next = self.num_timesteps + self.every
        return True

    def _on_training_end(self) -> None:
        self._validate()

    def _validate(self) -> None:
        score = log_wealth(evaluate(greedy(self.model), self.valid, self.config))
        if not self.curve or score > max(point["valid_log_wealth"] for point in self.curve):
            buffer = io.BytesIO()
            self.model.save(buffer)
            atomic_write_bytes(self.best_path, buffer.getvalue())
        self.curve.append({"timesteps": float(self.num_timesteps), "valid_log_wealth": score})


def train_agent(
    spec: AgentSpec, train: StockMarket, valid: StockMarket, base: EnvConfig, seed: int, out_dir: str | Path
) -> dict[str, Any]:
    """Train ``spec`` on ``train`` (scaled features), select on ``valid``; write ``best.zip`` and ``agent.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # small MLPs: threads cost more than they give, and runs stay reproducible
    env = TradingVecEnv(
        train.features[None], train.opens[None], train.closes[None], spec.n_envs, spec.env_config(base, True), seed
    )
    params = DEFAULTS[spec.algo] | spec.hyperparams
    model = ALGORITHMS[spec.algo]("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **params)
    select = _SelectOnValid(valid, spec.env_config(base), spec.eval_every, out / "best.zip")
    model.learn(total_timesteps=spec.timesteps, callback=select)
    best = max(select.curve, key=lambda point: point["valid_log_wealth"])
    record = {
        "spec": asdict(spec),
        "seed": seed,
        "env": asdict(spec.env_config(base)),
        "train": [f"{train.dates[0]:%Y-%m-%d}", f"{train.dates[-1]:%Y-%m-%d}"],
        "valid": [f"{valid.dates[0]:%Y-%m-%d}", f"{valid.dates[-1]:%Y-%m-%d}"],
        "best": best,
        "curve": select.curve,
    }
    atomic_write_text(out / "agent.json", json.dumps(record, indent=2))
    return record


def load_policy(spec: AgentSpec, agent_dir: str | Path | None) -> Policy:
    """The greedy policy of a trained agent's ``best.zip`` (Buy & Hold needs no directory)."""
    if spec.algo == "buy_and_hold":
        return buy_and_hold
    path = Path(agent_dir) / "best.zip"
    if not path.is_file():
        raise FileNotFoundError(f"No trained agent at {path}: run `storm-bt trade train` first.")
    try:
        model = ALGORITHMS[spec.algo].load(path, device="cpu")
    except Exception as e:  # SB3 raises zipfile/pickle/torch errors for a damaged file
        raise ValueError(f"{path} is not a readable {spec.algo.upper()} checkpoint ({e}); retrain this agent.") from e
    return greedy(model)
