"""The trading experiment: agents trained on train, selected on valid, evaluated once on test in the
env and in backtrader; reruns reuse; test prices never reach training."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CFG, STOCKS, WINDOW, check_report, folder_digest
from ruamel.yaml import YAML

from storm_bt.agents.sb3 import BUY_AND_HOLD, AgentSpec, evaluate, load_policy, log_wealth
from storm_bt.agents.states import FeatureScaler, StockMarket, factor_states, load_bars, price_states
from storm_bt.cli import main
from storm_bt.data.synthetic import SyntheticMarketConfig, write_market_csvs
from storm_bt.factors.store import FactorStore, write_factor_store
from storm_bt.io import exclusive
from storm_bt.model.storm import Storm
from storm_bt.model.windows import Panel, WindowDataset
from storm_bt.pipelines.trading import TradeConfig

MARKET = SyntheticMarketConfig(n_stocks=STOCKS, n_days=420, seed=11)
SEGMENTS = {
    "train": ["2015-01-02", "2015-12-31"],
    "valid": ["2016-01-05", "2016-06-30"],
    "test": ["2016-07-05", "2016-08-31"],
}
TRADED = ["SYN001", "SYN004"]
PPO_TINY = {"name": "ppo_storm", "algo": "ppo", "state": "factors", "timesteps": 1024, "eval_every": 256, "n_envs": 4,
            "episode_length": 64, "hyperparams": {"n_steps": 64, "batch_size": 64, "n_epochs": 2}}  # fmt: skip


def _factor_store(csv_dir: Path, path: Path) -> Path:
    """A factor store of an untrained small STORM over the market's own price features."""
    bars = load_bars(csv_dir, [f"SYN{i:03d}" for i in range(STOCKS)])
    frames = {s: price_states(b).iloc[:, : CFG.n_features] for s, b in bars.items()}
    features = pd.concat(frames, names=["instrument", "datetime"]).swaplevel().sort_index().astype(np.float32)
    labels = pd.Series(0.0, index=features.index)
    panel = Panel.from_frame(features, labels)
    torch.manual_seed(0)
    data = WindowDataset(panel, WINDOW, np.arange(len(panel.dates)))
    return write_factor_store(Storm(CFG), data, path, {"segments": SEGMENTS})


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trade")
    write_market_csvs(MARKET, root / "csv")
    store = _factor_store(root / "csv", root / "factors.h5")
    config = {"csv_dir": str(root / "csv"), "stocks": TRADED, "factors": {"path": str(store)},
              "env": {"commission_bps": 10, "slippage_bps": 5}, "seeds": [0, 1], "agents": [PPO_TINY]}  # fmt: skip
    yaml = YAML(typ="safe", pure=True)
    with open(root / "trade.yaml", "w") as fh:
        yaml.dump(config, fh)
    assert main(["trade", "run", "--config", str(root / "trade.yaml"), "--out", str(root / "run")]) == 0
    return {"root": root, "config": root / "trade.yaml", "run": root / "run", "store": store}


def test_every_policy_is_evaluated_once_on_test_in_both_engines(setup) -> None:
    results = pd.read_csv(setup["run"] / "results.csv")
    assert len(results) == len(TRADED) * (1 + 2) * 2  # (Buy & Hold + 2 seeds) x (env, backtrader)
    env = results[results.engine == "env"].set_index(["stock", "agent", "seed"]).sort_index()
    referee = results[results.engine == "backtrader"].set_index(["stock", "agent", "seed"]).sort_index()
    for metric in ("APY", "CW", "CR", "ASR", "MDD", "AVO"):
        np.testing.assert_allclose(referee[metric], env[metric], rtol=1e-7, err_msg=metric)
    values = pd.read_csv(setup["run"] / "values" / "SYN001_ppo_storm_seed1.csv", index_col=0, parse_dates=True)
    assert values.index[0] == pd.Timestamp("2016-07-05") and values.index[-1] <= pd.Timestamp("2016-08-31")
    np.testing.assert_allclose(values["backtrader"], values["env"], rtol=1e-9)
    tables = (setup["run"] / "tables.md").read_text()
    assert "### SYN001" in tables and "| buy_and_hold | backtrader |" in tables and "±" in tables


def test_buy_and_hold_matches_a_hand_computation(setup) -> None:
    bars = load_bars(setup["root"] / "csv", ["SYN004"])["SYN004"].loc["2016-07-05":"2016-08-31"]
    slipped = bars["open"].iloc[1] * 1.0005
    shares = math.floor(1_000_000 / (slipped * 1.001))
    cash = 1_000_000 - shares * slipped * 1.001
    expected_cw = (cash + shares * bars["close"].iloc[-1]) / 1_000_000
    results = pd.read_csv(setup["run"] / "results.csv").set_index(["stock", "agent", "engine"])
    assert results.loc[("SYN004", "buy_and_hold", "env"), "CW"] == pytest.approx(expected_cw, rel=1e-12)


def test_the_kept_checkpoint_is_the_best_on_valid(setup) -> None:
    agent_dir = setup["run"] / "agents" / "SYN001" / "ppo_storm" / "seed0"
    record = json.loads((agent_dir / "agent.json").read_text())
    scores = [p["valid_log_wealth"] for p in record["curve"]]
    assert len(scores) >= 4 and record["best"]["valid_log_wealth"] == max(scores)
    cfg = TradeConfig.from_yaml(setup["config"])
    spec = cfg.agents[0]
    bars = load_bars(setup["root"] / "csv", ["SYN001"])["SYN001"]
    days = bars.loc[SEGMENTS["train"][0] : SEGMENTS["test"][1]].index
    with FactorStore(setup["store"]) as store:
        market = StockMarket.build("SYN001", bars, factor_states(store, "SYN001", days))
    scaler = FeatureScaler.fit(market.between(*SEGMENTS["train"]).features)
    valid = market.between(*SEGMENTS["valid"]).scaled(scaler)
    episode = evaluate(load_policy(spec, agent_dir), valid, spec.env_config(cfg.env))
    assert log_wealth(episode) == pytest.approx(max(scores), abs=1e-12)


def test_rerun_reuses_agents_and_test_prices_never_reach_training(setup, caplog) -> None:
    """Same data: every agent is reused. Test-segment prices changed: training is bit-identical."""
    run = setup["run"]
    with caplog.at_level("INFO", logger="storm_bt"):
        assert main(["trade", "train", "--config", str(setup["config"]), "--out", str(run)]) == 0
    assert "0 trained, 4 reused" in caplog.text

    shaken = setup["root"] / "shaken"
    shutil.copytree(setup["root"] / "csv", shaken)
    for path in shaken.glob("SYN00[14].csv"):
        frame = pd.read_csv(path)
        later = pd.to_datetime(frame["date"]) >= pd.Timestamp(SEGMENTS["test"][0])
        scale = np.random.default_rng(1).uniform(0.5, 1.5, later.sum())
        for column in ("open", "high", "low", "close", "adj_close"):
            frame.loc[later, column] *= scale
        frame.to_csv(path, index=False)
    cfg = YAML(typ="safe", pure=True).load(setup["config"].read_text()) | {"csv_dir": str(shaken), "seeds": [1]}
    with open(setup["root"] / "shaken.yaml", "w") as fh:
        YAML(typ="safe", pure=True).dump(cfg, fh)
    assert (
        main(["trade", "train", "--config", str(setup["root"] / "shaken.yaml"), "--out", str(setup["root"] / "run2")])
        == 0
    )
    for stock in TRADED:
        original = json.loads((run / "agents" / stock / "ppo_storm" / "seed1" / "agent.json").read_text())
        again = json.loads(
            (setup["root"] / "run2" / "agents" / stock / "ppo_storm" / "seed1" / "agent.json").read_text()
        )
        assert again["curve"] == original["curve"]


def test_bad_configs_and_damaged_agents_get_clear_errors(setup, tmp_path) -> None:
    raw = YAML(typ="safe", pure=True).load(setup["config"].read_text())
    with pytest.raises(ValueError, match="unknown keys \\['episodes'\\]"):
        TradeConfig.from_dict(raw | {"episodes": 3})
    with pytest.raises(ValueError, match="exactly one of path, run or workflow"):
        TradeConfig.from_dict(raw | {"factors": {"path": "a.h5", "run": "b"}})
    with pytest.raises(ValueError, match="algo must be one of"):
        TradeConfig.from_dict(raw | {"agents": [PPO_TINY | {"algo": "a2c"}]})
    bad = tmp_path / "bad.yaml"
    YAML(typ="safe", pure=True).dump(raw | {"stocks": ["SYN001", "NOPE"]}, bad.open("w"))
    assert main(["trade", "train", "--config", str(bad), "--out", str(tmp_path / "out")]) == 2
    damaged = tmp_path / "agent"
    damaged.mkdir()
    (damaged / "best.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"best\.zip is not a readable PPO checkpoint"):
        load_policy(AgentSpec(**PPO_TINY), damaged)
    assert load_policy(BUY_AND_HOLD, None)(np.zeros(3)) == 2
    assert main(["trade", "eval", "--out", str(tmp_path / "nothing")]) == 2


def test_a_trading_run_in_use_refuses_a_second_run(setup) -> None:
    before = folder_digest(setup["run"])
    with exclusive(setup["run"], "trading run folder"):
        assert main(["trade", "run", "--config", str(setup["config"]), "--out", str(setup["run"])]) == 2
    assert folder_digest(setup["run"]) == before


def test_policy_replay_script_shows_both_engines(setup) -> None:
    script = Path(__file__).resolve().parents[1] / "experiments" / "backtrader_policy_replay.py"
    cmd = [sys.executable, str(script), "--run", str(setup["run"]), "--stock", "syn004", "--agent", "ppo_storm"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    gap = float(next(line for line in done.stdout.splitlines() if "largest relative gap" in line).split(":")[1])
    assert gap < 1e-9 and "backtrader fills" in done.stdout


def test_report_of_a_trading_run_has_rendered_figures(setup) -> None:
    assert main(["report", str(setup["run"])]) == 0
    check_report(setup["run"] / "report" / "report.html", {"trading_SYN001", "trading_SYN004"})
    assert main(["report", str(setup["root"] / "nowhere")]) == 2


def test_agents_trained_on_two_processes_match_the_in_process_ones(setup) -> None:
    """Agents are independent runs on the executor; each fixes its own threads, so where it runs changes nothing."""
    out = setup["root"] / "run_jobs2"
    flags = ["--jobs", "2", "--threads", "1"]
    assert main(["trade", "train", "--config", str(setup["config"]), "--out", str(out), *flags]) == 0
    for record in (setup["run"] / "agents").glob("*/*/seed*/agent.json"):
        twin = out / record.relative_to(setup["run"])
        assert json.loads(twin.read_text())["curve"] == json.loads(record.read_text())["curve"]
    assert len(list((out / "agents").glob("*/*/seed*/best.zip"))) == len(TRADED) * 2


def test_accounts_default_per_algorithm_and_an_explicit_count_wins() -> None:
    assert [AgentSpec(name=a, algo=a).n_envs for a in ("ppo", "dqn", "sac")] == [64, 16, 16]
    assert AgentSpec(name="p", algo="ppo", n_envs=4).n_envs == 4
    with pytest.raises(ValueError, match="n_envs must be positive"):
        AgentSpec(name="p", algo="ppo", n_envs=0)
