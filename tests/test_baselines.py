"""The FactorVAE baseline: its loss by construction, and it learns under STORM's trainer."""

from __future__ import annotations

from dataclasses import replace

import torch
from helpers import CFG, FAST, datasets, planted_frame

from storm_bt.model.factorvae import FactorVAE
from storm_bt.model.losses import cs_standardize, gaussian_kl, gaussian_nll, masked_mse
from storm_bt.model.trainer import Trainer, predict_windows, rank_ic_of


def test_factorvae_loss_is_nll_plus_kl_plus_prediction_error():
    torch.manual_seed(0)
    model = FactorVAE(CFG).eval()
    x = torch.randn(3, CFG.window, CFG.n_stocks, CFG.n_features)
    mask = torch.ones(3, CFG.window, CFG.n_stocks, dtype=torch.bool)
    mask[1, :, 4] = False
    y = torch.randn(3, CFG.n_stocks)
    out = model(x, mask, y)
    stock_mask = mask[:, -1]
    target = cs_standardize(y, stock_mask)
    factor = model.factor(model_hidden(model, x, mask), stock_mask, torch.zeros(3, 0, CFG.factor_hidden), target)
    expected = (
        CFG.w_kl * gaussian_kl(*factor.z_post, *factor.z_prior)
        + CFG.w_return * gaussian_nll(target, factor.mu_post, factor.sigma_post, stock_mask)
        + CFG.w_pred * masked_mse(factor.mu_prior, target, stock_mask)
    )
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(model(x, mask).pred, out.pred)  # the score does not depend on y


def test_factorvae_with_a_stock_embedding_scores_the_stock_not_its_column():
    cfg = replace(CFG, stock_embedding=3)
    torch.manual_seed(0)
    model = FactorVAE(cfg).eval()
    x, mask = torch.randn(2, cfg.window, cfg.n_stocks, cfg.n_features), torch.ones(2, cfg.window, cfg.n_stocks).bool()
    order = torch.randperm(cfg.n_stocks, generator=torch.Generator().manual_seed(0))
    expected = model(x, mask).pred[:, order]
    torch.testing.assert_close(model(x[:, :, order], mask[:, :, order], stock_ids=order).pred, expected)
    assert not torch.allclose(model(x[:, :, order], mask[:, :, order]).pred, expected)


def model_hidden(model: FactorVAE, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    b, t, n, f = x.shape
    series = (x * mask.unsqueeze(-1)).permute(0, 2, 1, 3).reshape(b * n, t, f)
    return model.gru(model.proj(series))[1][-1].view(b, n, -1)


def test_factorvae_learns_the_planted_signal_under_the_storm_trainer():
    train, valid = datasets(*planted_frame())
    model, result = Trainer(CFG, FAST, network=FactorVAE).fit(train, valid)
    assert rank_ic_of(predict_windows(model, valid), valid)["RankIC"] > 0.25
    assert result.best_epoch >= 1
