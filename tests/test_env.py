"""Trading environment: kernel properties, gymnasium/SB3 compliance, determinism, no look-ahead."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env

from storm_bt.env import ENV_ID, EnvConfig, TradingEnv, TradingVecEnv
from storm_bt.env.enums import Action, Fill, OrderStatus, Rules
from storm_bt.env.kernel import execute_nb


def market(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DatetimeIndex]:
    rng = np.random.default_rng(seed)
    closes = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    opens = closes * np.exp(rng.normal(0, 0.005, n))
    features = rng.standard_normal((n, 4)).astype(np.float32)
    return features, opens, closes, pd.bdate_range("2021-01-04", periods=n)


prices = st.floats(1.0, 500.0)


@settings(max_examples=300, deadline=None)
@given(
    cash=st.floats(0.0, 1e6),
    shares=st.integers(-2000, 5000),
    action=st.one_of(st.sampled_from([0.0, 1.0, 2.0]), st.floats(-1.0, 1.0)),
    p_open=prices,
    p_close0=prices,
    p_close1=prices,
    commission=st.floats(0.0, 0.01),
    slippage=st.floats(0.0, 0.01),
    fill=st.sampled_from(list(Fill)),
)
def test_kernel_accounting(cash, shares, action, p_open, p_close0, p_close1, commission, slippage, fill):
    discrete = action in (0.0, 1.0, 2.0) and action == int(action)
    if shares < 0 and discrete:
        shares = -shares  # discrete trading is long-only
    opens, closes = np.array([p_close0, p_open]), np.array([p_close0, p_close1])
    new_cash, new_shares, px, traded, cost, value, status = execute_nb(
        0, cash, shares, action, opens, closes, Rules(discrete, int(fill), commission, slippage)
    )
    assert new_cash >= -1e-6 * max(1.0, cash)  # never negative (float rounding aside)
    assert new_shares == shares + traded and isinstance(new_shares, int)
    assert cost == pytest.approx(commission * abs(traded) * px, rel=1e-12, abs=1e-9)  # charged once
    assert new_cash == pytest.approx(cash - traded * px - cost, rel=1e-12, abs=1e-6)
    assert value == pytest.approx(new_cash + new_shares * p_close1, rel=1e-12, abs=1e-6)
    base = p_open if fill == Fill.NEXT_OPEN else p_close0
    if traded > 0:
        assert px == pytest.approx(base * (1 + slippage))
        assert (traded + 1) * px * (1 + commission) > cash or discrete is False  # buy-all buys all it can
    elif traded < 0:
        assert px == pytest.approx(base * (1 - slippage))
    if discrete and int(action) == 0:
        assert new_shares == 0
    if discrete and int(action) == 1:
        assert traded == 0 and status == OrderStatus.NO_ORDER
    assert (status == OrderStatus.FILLED) == (traded != 0 and status != OrderStatus.CUT_BY_CASH)
    if status == OrderStatus.NO_CASH:  # a buy that cannot afford one share
        assert traded == 0 and base * (1 + slippage) * (1 + commission) > cash
    if status == OrderStatus.CUT_BY_CASH:  # only a continuous target is cut; a buy-all buys what cash affords
        assert not discrete and traded > 0 and (traded + 1) * px * (1 + commission) > cash


@pytest.mark.parametrize(
    ("action", "cash", "shares", "status", "traded"),
    [
        (Action.HOLD, 1e4, 10, OrderStatus.NO_ORDER, 0),
        (Action.SELL_ALL, 1e4, 0, OrderStatus.NO_ORDER, 0),
        (Action.SELL_ALL, 1e4, 10, OrderStatus.FILLED, -10),
        (Action.BUY_ALL, 1e4, 0, OrderStatus.FILLED, 99),  # 10,000 / (100 * 1.001 * 1.0005): buys all it can
        (Action.BUY_ALL, 50.0, 10, OrderStatus.NO_CASH, 0),
        (0.5, 1e4, 0, OrderStatus.FILLED, 50),  # half of 10,000 at 100
        (1.0, 1e4, 0, OrderStatus.CUT_BY_CASH, 99),  # wants 100, costs push one out of reach
    ],
)
def test_the_order_status_names_what_became_of_the_action(action, cash, shares, status, traded):
    prices = np.array([100.0, 100.0])
    step = execute_nb(0, cash, shares, float(action), prices, prices, Rules(isinstance(action, Action), 0, 5e-4, 1e-3))
    assert (step.status, step.traded) == (status, traded)


def test_env_info_carries_the_order_status():
    features, opens, closes, dates = market()
    env = TradingEnv(features, opens, closes, dates)
    assert env.reset(seed=0)[1]["status"] is OrderStatus.NO_ORDER
    statuses = [env.step(Action.BUY_ALL)[4]["status"] for _ in range(2)]
    assert statuses == [OrderStatus.FILLED, OrderStatus.NO_CASH]  # the second buy finds too little cash left


@pytest.mark.parametrize("action", ["discrete", "continuous"])
def test_env_passes_the_sb3_checker_and_is_registered(action):
    import gymnasium

    features, opens, closes, dates = market()
    env = TradingEnv(features, opens, closes, dates, EnvConfig(action=action, episode_length=20))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, warn=True)
    assert [str(w.message) for w in caught] == []
    made = gymnasium.make(ENV_ID, features=features, opens=opens, closes=closes, config=EnvConfig(action=action))
    assert made.reset(seed=0)[0].dtype == np.float32


def test_rewards_sum_to_the_log_growth_of_value_and_fills_are_next_open():
    features, opens, closes, dates = market()
    env = TradingEnv(features, opens, closes, dates, EnvConfig(commission_bps=10, slippage_bps=5))
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    total, done, infos = 0.0, False, []
    while not done:
        _, reward, terminated, truncated, info = env.step(int(rng.integers(3)))
        total += reward
        infos.append(info)
        done = terminated or truncated
    assert len(infos) == len(closes) - 1 and infos[-1]["date"] == dates[-1]
    assert total == pytest.approx(math.log(env.value / 1_000_000.0), rel=1e-12)
    first_buy = next(i for i in infos if i["traded"] > 0)
    t = dates.get_loc(first_buy["date"])  # the step that ends on bar t filled at bar t's open
    assert first_buy["price"] == pytest.approx(opens[t] * 1.0005)


def test_same_seed_same_episode():
    features, opens, closes, dates = market()
    runs = []
    for _ in range(2):
        env = TradingEnv(features, opens, closes, dates, EnvConfig(episode_length=15))
        obs, info = env.reset(seed=42)
        trace = [obs]
        for a in [2, 1, 0, 2, 2, 1]:
            trace.append(env.step(a)[0])
        runs.append((info["date"], np.stack(trace)))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_observation_at_t_ignores_data_after_t():
    features, opens, closes, dates = market()
    t = 30
    shaken = [a.copy() for a in (features, opens, closes)]
    for a in shaken:
        a[t + 1 :] *= 1.7
    actions = np.random.default_rng(3).integers(0, 3, len(closes) - 1)

    def observations(f, o, c):
        env = TradingEnv(f, o, c, dates)
        out = [env.reset(seed=0)[0]]
        for a in actions[:t]:
            out.append(env.step(int(a))[0])
        return np.stack(out)  # observations at bars 0..t

    np.testing.assert_array_equal(observations(features, opens, closes), observations(*shaken))


def test_bad_inputs_and_actions_are_named():
    features, opens, closes, dates = market()
    broken = features.copy()
    broken[7, 2] = np.nan
    with pytest.raises(ValueError, match=str(dates[7].date())):
        TradingEnv(broken, opens, closes, dates)
    bad_close = closes.copy()
    bad_close[3] = 0
    with pytest.raises(ValueError, match="close price"):
        TradingEnv(features, opens, bad_close, dates)
    with pytest.raises(ValueError, match="Expected features"):
        TradingEnv(features[:-1], opens, closes, dates)
    env = TradingEnv(features, opens, closes, dates)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not in the action space"):
        env.step(5)
    with pytest.raises(ValueError, match="fill must be"):
        EnvConfig(fill="vwap")
    for action in (float("nan"), np.float32("nan"), float("inf")):
        with pytest.raises(ValueError, match="not in the action space"):
            env.step(action)
    with pytest.raises(RuntimeError, match=r"Call reset\(\) before the first step\(\)"):
        TradingEnv(features, opens, closes, dates).step(2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial_cash": float("nan")}, "initial_cash must be a positive finite amount, got nan"),
        ({"initial_cash": float("inf")}, "initial_cash must be a positive finite amount"),
        ({"initial_cash": 0.0}, "initial_cash must be a positive finite amount"),
        ({"commission_bps": float("nan")}, "commission_bps must be finite"),
        ({"slippage_bps": float("inf")}, "slippage_bps must be finite"),
        ({"commission_bps": 20_000}, r"commission_bps must be .* below 10000 \(100% of notional\), got 20000"),
        ({"slippage_bps": -1}, "slippage_bps must be finite, at least 0"),
    ],
)
def test_env_config_refuses_costs_and_cash_that_break_the_accounting(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EnvConfig(**kwargs)


def test_cash_stays_non_negative_at_the_highest_costs_allowed():
    features, opens, closes, dates = market()
    env = TradingEnv(features, opens, closes, dates, EnvConfig(commission_bps=9_999, slippage_bps=9_999))
    env.reset(seed=0)
    for step in range(len(closes) - 1):
        *_, terminated, _, info = env.step(2 if step % 2 == 0 else 0)
        assert info["cash"] >= 0.0 and np.isfinite(info["value"])
        if terminated:
            break


def test_vec_env_matches_single_envs_step_for_step():
    """The batched kernel and the single env apply the same rules: same rewards and values."""
    markets = [market(seed=s) for s in range(3)]
    features = np.stack([m[0] for m in markets])
    opens, closes = np.stack([m[1] for m in markets]), np.stack([m[2] for m in markets])
    config = EnvConfig(commission_bps=10, slippage_bps=5)
    vec = TradingVecEnv(features, opens, closes, n_envs=6, config=config, seed=0)
    obs = vec.reset()
    singles = [TradingEnv(features[i % 3], opens[i % 3], closes[i % 3], config=config) for i in range(6)]
    single_obs = np.stack([env.reset(seed=0)[0] for env in singles])
    np.testing.assert_allclose(obs, single_obs, rtol=1e-6)
    rng = np.random.default_rng(0)
    for step in range(len(closes[0]) - 1):
        actions = rng.integers(0, 3, 6)
        _, rewards, dones, _ = vec.step(actions)
        results = [env.step(int(a)) for env, a in zip(singles, actions, strict=True)]
        np.testing.assert_allclose(rewards, [r[1] for r in results], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(vec.status, [r[4]["status"] for r in results])
        if not dones.any():  # after the last step the batch has already reset its accounts
            np.testing.assert_allclose(vec.accounts.value, [env.value for env in singles], rtol=1e-9)
        assert dones.all() == (step == len(closes[0]) - 2) and dones.all() == dones.any()


def test_vec_env_random_starts_and_auto_reset():
    features, opens, closes, _ = market(n=80)
    vec = TradingVecEnv(
        features[None], opens[None], closes[None], n_envs=8, config=EnvConfig(episode_length=10), seed=1
    )
    vec.reset()
    assert len(set(vec.accounts.t.tolist())) > 1  # random starts
    for _ in range(10):
        _, _, dones, infos = vec.step(np.full(8, 2))
    assert dones.all() and all(i["TimeLimit.truncated"] for i in infos)
    assert (vec.accounts.value == 1_000_000.0).all() and (vec.accounts.shares == 0).all()  # every account was reset
    with pytest.raises(ValueError, match="not in"):
        vec.step(np.full(8, 3))


def test_vec_env_terminal_observation_is_the_ended_episodes_last_and_the_restart_its_first():
    features, opens, closes, _ = market(n=80)
    config = EnvConfig(episode_length=10)
    vec = TradingVecEnv(features[None], opens[None], closes[None], n_envs=8, config=config, seed=3)
    vec.reset()
    for _ in range(9):
        vec.step(np.full(8, 2))
    last_bar = vec.accounts.t + 1
    obs, _, dones, infos = vec.step(np.full(8, 2))
    assert dones.all()
    for i, info in enumerate(infos):
        terminal = info["terminal_observation"]
        np.testing.assert_array_equal(terminal[:4], features[last_bar[i]])
        assert terminal[4] > 0.9 and terminal[6] != 0.0  # invested, value moved since the start
        np.testing.assert_array_equal(obs[i, :4], features[vec.accounts.t[i]])
        np.testing.assert_allclose(obs[i, 4:], [0.0, 1.0, 0.0])  # the restarted account: all cash
    with pytest.raises(TypeError):  # the infos of running episodes are one shared read-only mapping
        vec.step(np.full(8, 1))[3][0]["episode"] = {}


def test_vec_env_same_seed_same_starts_and_seed_restarts_the_draws():
    features, opens, closes, _ = market(n=80)

    def starts(vec: TradingVecEnv, steps: int) -> list[list[int]]:
        vec.reset()
        seen = [vec.accounts.t.tolist()]
        for _ in range(steps):
            vec.step(np.full(4, 1))
            seen.append(vec.accounts.t.tolist())
        return seen

    make = lambda seed: TradingVecEnv(  # noqa: E731
        features[None], opens[None], closes[None], n_envs=4, config=EnvConfig(episode_length=5), seed=seed
    )
    first = starts(make(7), 30)
    assert first == starts(make(7), 30) and first != starts(make(8), 30)
    reseeded = make(8)
    starts(reseeded, 12)
    reseeded.seed(7)
    assert starts(reseeded, 30) == first
