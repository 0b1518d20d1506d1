"""The model extension point: a new window network is one file plus one workflow YAML.

``tests/extension/tiny_mlp.py`` implements the :class:`~storm_bt.model.network.WindowNetwork`
protocol and nothing else; its workflow trains it under ``qrun`` with the shared trainer, and
Qlib's records score it like any model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from storm_bt.data.provider import read_calendar
from storm_bt.model import FactorVAE, Storm, StormConfig, WindowModel, WindowNetwork
from storm_bt.model.network import network_class
from storm_bt.workflows.qrun import latest_metrics, load_workflow, retarget, run_workflow
from storm_bt.workflows.segments import Segments

EXTENSION = Path(__file__).parent / "extension"


def test_a_new_window_model_trains_and_is_scored_through_qrun(quickstart_run, tmp_path):
    config = load_workflow(EXTENSION / "workflow_tiny_mlp_synth.yaml")
    model = config["task"]["model"]["kwargs"]
    assert "preset" not in model and "model_config" not in model  # Qlib's __DROP__ removed STORM's arguments
    model["network"]["module_path"] = str(EXTENSION / "tiny_mlp.py")  # the YAML names it from the repository root
    provider = quickstart_run / "qlib_data"
    segments = Segments.carve(read_calendar(provider), (0.6, 0.2, 0.2), embargo=2)
    run_workflow(retarget(config, provider, "synth", "SYNTH_EW", segments), tmp_path)
    history = json.loads((tmp_path / "checkpoints" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2] and all(np.isfinite(r["mse"]) for r in history)
    assert all(np.isfinite(r["valid_RankIC"]) for r in history)
    metrics = latest_metrics(tmp_path)
    for key in ("IC", "Rank IC", "1day.excess_return_with_cost.annualized_return", "paper.CW"):
        assert np.isfinite(metrics[key]), key


@pytest.mark.parametrize("network", [Storm, FactorVAE])
def test_storm_and_factorvae_are_window_networks_whose_terms_all_have_weights(network):
    cfg = network.configure(6, 5, preset="small", window=8, codebook_size=8, w_corr=0.5)
    assert isinstance(cfg, StormConfig) and cfg.n_stocks == 6 and cfg.n_features == 5
    model = network(cfg)
    assert isinstance(model, WindowNetwork) and model.window == 8
    x, mask = torch.randn(2, 8, 6, 5), torch.ones(2, 8, 6, dtype=torch.bool)
    out = model(x, mask, torch.randn(2, 6))
    assert set(out.loss_terms) == set(model.loss_weights) and "corr" in out.loss_terms
    expected = sum(model.loss_weights[k] * v for k, v in out.loss_terms.items())
    torch.testing.assert_close(out.loss, expected)


def test_a_class_that_is_not_a_window_network_is_refused_by_name():
    with pytest.raises(TypeError, match=r"collections\.OrderedDict.* is not a WindowNetwork"):
        network_class("collections.OrderedDict")
    with pytest.raises(TypeError, match="not a WindowNetwork"):
        WindowModel(network="torch.nn.Linear")
