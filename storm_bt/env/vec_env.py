"""Many trading environments stepped by one jitted call: a stable-baselines3 ``VecEnv``.

SB3's ``DummyVecEnv`` steps Python environments one by one; here all accounts live in arrays
and :func:`storm_bt.env.kernel.step_batch_nb` advances them together, so PPO can collect rollouts
over many stocks and start dates at the cost of one call per step. Environment ``i`` trades
asset ``i % n_assets``; an episode that ends is reset at once (its last observation is in
``info["terminal_observation"]``, as SB3 expects). The accounts whose episodes go on share one
read-only empty info: building a dict per account per step cost as much as stepping the accounts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from stable_baselines3.common.vec_env import VecEnv

from storm_bt.env.enums import Accounts, Episodes, Market
from storm_bt.env.kernel import first_invalid_action_nb, restart_batch_nb, step_batch_flat_nb
from storm_bt.env.trading_env import ACCOUNT_FEATURES, EnvConfig, check_market

__all__ = ["TradingVecEnv"]

START_DRAWS = 4096  # episode starts drawn from the generator at a time
NO_INFO: Mapping[str, Any] = MappingProxyType({})  # the info of every account whose episode goes on: read-only, shared


class TradingVecEnv(VecEnv):
    """``n_envs`` accounts over ``features`` (A, T, E), ``opens`` and ``closes`` (A, T)."""

    render_mode = None

    def __init__(
        self,
        features: np.ndarray,
        opens: np.ndarray,
        closes: np.ndarray,
        n_envs: int,
        config: EnvConfig | None = None,
        seed: int | None = None,
    ) -> None:
        self.config = config or EnvConfig()
        self.features = np.asarray(features, dtype=np.float32)
        self.opens = np.ascontiguousarray(opens, dtype=np.float64)
        self.closes = np.ascontiguousarray(closes, dtype=np.float64)
        if self.features.ndim != 3 or self.opens.shape != self.features.shape[:2] != self.closes.shape:
            raise ValueError(
                f"Expected features (A, T, E) with opens and closes (A, T); got {self.features.shape}, "
                f"{self.opens.shape}, {self.closes.shape}."
            )
        for a in range(len(self.features)):
            check_market(self.features[a], self.opens[a], self.closes[a], pd.RangeIndex(self.closes.shape[1]))
        self._last = self.closes.shape[1] - 1
        self.config.check_bars(self._last + 1)
        dim = self.features.shape[2] + ACCOUNT_FEATURES
        observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32)
        super().__init__(n_envs, observation_space, self.config.action_space())
        self._rng = np.random.default_rng(seed)
        self.asset = np.arange(n_envs) % len(self.features)
        self.accounts = Accounts(
            t=np.zeros(n_envs, dtype=np.int64),
            end=np.zeros(n_envs, dtype=np.int64),
            cash=np.zeros(n_envs),
            shares=np.zeros(n_envs, dtype=np.int64),
            value=np.zeros(n_envs),
        )
        self.status = np.zeros(n_envs, dtype=np.int8)  # each account's last OrderStatus code
        self._market = Market(self.features, self.opens, self.closes)
        length = self._last if self.config.episode_length is None else self.config.episode_length
        self._episodes = Episodes(np.zeros(0, dtype=np.int64), length, self.config.initial_cash)
        self._cursor = 0  # the next start of self._episodes.starts
        self._actions = np.zeros(n_envs)
        self._truncated = np.zeros(n_envs, dtype=np.bool_)
        self._terminal = np.zeros((n_envs, dim), dtype=np.float32)  # the kernel's scratch for ending episodes
        self._ended = np.zeros(n_envs, dtype=np.int64)

    # -- VecEnv API ---------------------------------------------------------------------------------

    def reset(self) -> np.ndarray:
        self._draw_starts(self.num_envs)
        obs = self._new_observations()
        restart_batch_nb(self.accounts, self.asset, self._market, self._episodes, self._cursor, obs)
        self._cursor += self.num_envs
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs)
        bad = first_invalid_action_nb(actions, self.config.discrete)
        if bad >= 0:
            raise ValueError(f"Action {actions[bad]!r} of env {bad} is not in {self.action_space}.")
        self._actions = actions

    def step_wait(self):
        n = self.num_envs
        self._draw_starts(n)
        rewards, dones, obs = np.empty(n, np.float32), np.empty(n, np.bool_), self._new_observations()
        ended = step_batch_flat_nb(
            *self.accounts, self._actions, self.asset, *self._market, *self.config.rules, *self._episodes,
            self._cursor, rewards, self.status, dones, self._truncated, obs, self._terminal, self._ended,
        )  # fmt: skip
        self._cursor += ended
        infos = [NO_INFO] * n
        for k in range(ended):
            i = self._ended[k]
            truncated = bool(self._truncated[i])
            infos[i] = {"terminal_observation": self._terminal[k].copy(), "TimeLimit.truncated": truncated}
        return obs, rewards, dones, infos

    def close(self) -> None:
        return None

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        raise AttributeError(f"TradingVecEnv has no per-environment objects to call {method_name!r} on.")

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        self._rng = np.random.default_rng(seed)
        self._episodes, self._cursor = self._episodes._replace(starts=np.zeros(0, dtype=np.int64)), 0
        return [seed] * self.num_envs

    # -- helpers ------------------------------------------------------------------------------------

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)

    def _draw_starts(self, needed: int) -> None:
        """Keep at least ``needed`` episode starts drawn ahead: the kernel restarts accounts from them in order."""
        left = self._episodes.starts[self._cursor :]
        if len(left) >= needed:
            return
        length = self.config.episode_length
        draws = max(needed, START_DRAWS)
        if length is None:
            new = np.zeros(draws, dtype=np.int64)
        else:
            new = self._rng.integers(0, self._last - length + 1, size=draws)
        self._episodes = self._episodes._replace(starts=np.concatenate([left, new]))
        self._cursor = 0

    def _new_observations(self) -> np.ndarray:
        """A fresh array per step: SB3 and its callers may keep the one returned before."""
        return np.empty((self.num_envs, *self.observation_space.shape), dtype=np.float32)
