"""STORM nn.Module: chunking, every loss term by hand, shapes per preset and ablation, invariances."""

from __future__ import annotations

import math

import pytest
import torch

from storm_bt.model.chunking import cs_chunks, cs_unchunk, ts_chunks, ts_token_mask, ts_unchunk
from storm_bt.model.config import ABLATIONS, StormConfig
from storm_bt.model.losses import cs_standardize, gaussian_kl, gaussian_nll, info_nce, masked_mse
from storm_bt.model.storm import Storm

TINY = StormConfig.preset(
    "small",
    n_stocks=6,
    n_features=5,
    window=8,
    patch_days=4,
    d_model=16,
    cs_stem_dim=4,
    codebook_size=8,
    n_factors=4,
    factor_hidden=16,
)


def _batch(cfg: StormConfig, b: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, cfg.window, cfg.n_stocks, cfg.n_features, generator=g)
    mask = torch.ones(b, cfg.window, cfg.n_stocks, dtype=torch.bool)
    mask[0, :, 2] = False  # a stock missing from the whole window
    if b > 1:
        mask[1, :3, 4] = False  # a stock that lists during the window
    y = 0.01 * torch.randn(b, cfg.n_stocks, generator=g)
    return x, mask, y


def test_ts_chunks_are_one_stock_over_p_days_time_major():
    x = torch.arange(2 * 8 * 3 * 2, dtype=torch.float32).reshape(2, 8, 3, 2)  # (B, T, N, F)
    tokens = ts_chunks(x, 4)
    assert tokens.shape == (2, 2 * 3, 4 * 2)
    torch.testing.assert_close(tokens[1, 1 * 3 + 2], x[1, 4:8, 2, :].reshape(-1))  # block 1 of stock 2
    torch.testing.assert_close(ts_unchunk(tokens, 3, 4), x)
    torch.testing.assert_close(cs_unchunk(cs_chunks(x), 3), x)
    assert cs_chunks(x)[0, 5].tolist() == x[0, 5].reshape(-1).tolist()  # every stock on day 5


def test_ts_token_mask_keeps_partly_present_chunks():
    mask = torch.ones(1, 8, 2, dtype=torch.bool)
    mask[0, :4, 1] = False
    mask[0, 5, 0] = False
    assert ts_token_mask(mask, 4).tolist() == [[True, False, True, True]]


def test_cs_standardize_by_hand():
    y = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[True, True, True, False]])
    z = cs_standardize(y, mask)
    sd = math.sqrt(2 / 3)
    torch.testing.assert_close(z, torch.tensor([[-1 / sd, 0.0, 1 / sd, 0.0]]))


def test_gaussian_terms_by_hand():
    mu_q, s_q, mu_p, s_p = torch.tensor([[0.5]]), torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]])
    assert gaussian_kl(mu_q, s_q, mu_p, s_p).item() == pytest.approx(math.log(2) + (1 + 0.25) / 8 - 0.5)
    assert gaussian_kl(mu_p, s_p, mu_p, s_p).item() == pytest.approx(0.0)
    y, mu, sigma = torch.tensor([[1.0, 9.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 1.0]])
    nll = gaussian_nll(y, mu, sigma, torch.tensor([[True, False]]))
    assert nll.item() == pytest.approx(math.log(2) + 0.5 * 0.25 + 0.5 * math.log(2 * math.pi))
    assert masked_mse(torch.tensor([1.0, 5.0]), torch.tensor([0.0, 0.0]), torch.tensor([True, False])).item() == 1.0


def test_info_nce_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    scale = torch.tensor(0.0)  # logits are plain cosines
    p = math.exp(1) / (math.exp(1) + math.exp(0))
    assert info_nce(a, a, scale).item() == pytest.approx(-math.log(p))
    assert info_nce(a[:1], a[:1], scale).item() == 0.0  # no negatives in a batch of one


@pytest.mark.parametrize("ablation", [None, *ABLATIONS])
def test_forward_shapes_and_losses(ablation):
    cfg = TINY if ablation is None else TINY.ablation(ablation)
    torch.manual_seed(0)
    model = Storm(cfg)
    x, mask, y = _batch(cfg)
    out = model(x, mask, y)
    assert out.pred.shape == (3, cfg.n_stocks)
    assert torch.isfinite(out.loss) and all(torch.isfinite(v) for v in out.loss_breakdown.values())
    expected = {"kl", "return", "pred"} | {
        f"{t}_{b}"
        for b in ("ts", "cs")
        if getattr(cfg, f"use_{b}")
        for t in ("recon", "codebook", "commit", "diversity", "ortho")
    }
    if cfg.use_ts and cfg.use_cs:
        expected.add("contrastive")
    assert set(out.loss_breakdown) == expected
    weighted = sum(getattr(cfg, f"w_{k.split('_')[0]}") * v for k, v in out.loss_breakdown.items())
    torch.testing.assert_close(out.loss, weighted)
    out.loss.backward()
    for branch in (model.ts, model.cs):
        if branch is not None:
            assert branch.quantizer.codebook.grad is not None and branch.quantizer.codebook.grad.abs().sum() > 0
    emb = out.embeddings
    if cfg.use_ts:
        assert emb.ts_tokens.shape == (3, cfg.n_time_patches, cfg.n_stocks, 2 * cfg.d_model)
        assert emb.ts_codes.max() < cfg.codebook_size
    if cfg.use_cs:
        assert emb.cs_tokens.shape == (3, cfg.window, 2 * cfg.d_model)


def test_paper_preset_has_the_papers_parameter_count():
    count = sum(p.numel() for p in Storm(StormConfig.preset("paper")).parameters())
    assert abs(count - 15.2e6) / 15.2e6 < 0.10


def test_same_seed_same_predictions():
    x, mask, _ = _batch(TINY)
    preds = []
    for _ in range(2):
        torch.manual_seed(123)
        preds.append(Storm(TINY).eval()(x, mask).pred)
    torch.testing.assert_close(preds[0], preds[1], rtol=0, atol=0)


def test_batch_composition_does_not_change_a_prediction():
    torch.manual_seed(0)
    model = Storm(TINY).eval()
    x, mask, _ = _batch(TINY, b=4)
    together = model(x, mask).pred
    for i in range(4):
        alone = model(x[i : i + 1], mask[i : i + 1]).pred
        torch.testing.assert_close(alone[0], together[i], rtol=1e-5, atol=1e-6)
    shuffled = model(x.flip(0), mask.flip(0)).pred.flip(0)
    torch.testing.assert_close(shuffled, together, rtol=1e-5, atol=1e-6)


def test_a_missing_stocks_values_are_ignored():
    torch.manual_seed(0)
    model = Storm(TINY).eval()
    x, mask, _ = _batch(TINY, b=1)
    mask[0, :, 2] = False
    noisy = x.clone()
    noisy[0, :, 2] = 1e3 * torch.randn_like(noisy[0, :, 2])
    noisy[0, 0, 2, 0] = float("nan")
    torch.testing.assert_close(model(x, mask).pred, model(noisy, mask).pred)


def test_bad_shapes_are_explained():
    model = Storm(TINY)
    x, mask, y = _batch(TINY)
    with pytest.raises(ValueError, match=r"Expected x of shape \(B, 8, 6, 5\), actual shape: \(3, 8, 6, 4\)"):
        model(x[..., :4], mask)
    with pytest.raises(ValueError, match="Expected a bool mask"):
        model(x, mask.float())
    with pytest.raises(ValueError, match=r"Expected y of shape \(3, 6\)"):
        model(x, mask, y[:, :5])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 10, "patch_days": 4}, "multiple of patch_days"),
        ({"use_ts": False, "use_cs": False, "fusion": False}, "At least one branch"),
        ({"use_cs": False}, "fusion=True needs both branches"),
        ({"d_model": 30, "ts_heads": 4}, "divisible by ts_heads"),
        ({"colour": "red"}, r"Unknown StormConfig key\(s\) \['colour'\]"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StormConfig.preset("small", **kwargs)
