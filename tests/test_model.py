"""STORM nn.Module: chunking, every loss term by hand, shapes per preset and ablation, invariances."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import Tensor

from storm_bt.model.blocks import checkpoint_activations
from storm_bt.model.chunking import cs_chunks, cs_unchunk, ts_chunks, ts_token_mask, ts_unchunk
from storm_bt.model.config import ABLATIONS, StormConfig
from storm_bt.model.losses import (
    MAX_LOGIT_SCALE,
    correlation_loss,
    cs_rank_gauss,
    cs_standardize,
    gaussian_kl,
    gaussian_nll,
    info_nce,
    masked_mse,
)
from storm_bt.model.storm import Storm, cs_feature_zscore

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
    assert torch.isfinite(out.loss) and all(torch.isfinite(v) for v in out.loss_terms.values())
    expected = {"kl", "return", "pred"} | {
        f"{t}_{b}"
        for b in ("ts", "cs")
        if getattr(cfg, f"use_{b}")
        for t in ("recon", "codebook", "commit", "diversity", "ortho")
    }
    if cfg.use_ts and cfg.use_cs:
        expected.add("contrastive")
    assert set(out.loss_terms) == expected == set(model.loss_weights)
    weighted = sum(getattr(cfg, f"w_{k.split('_')[0]}") * v for k, v in out.loss_terms.items())
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
        ({"label_transform": "rank"}, r"label_transform must be one of \['zscore', 'rank_gauss'\], got 'rank'"),
        ({"feature_norm": "z"}, "feature_norm must be one of"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"stock_embedding": -4}, "stock_embedding must be >= 0"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StormConfig.preset("small", **kwargs)


def test_info_nce_caps_the_temperature_at_100():
    torch.manual_seed(0)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    capped = info_nce(a, b, torch.tensor(MAX_LOGIT_SCALE))
    torch.testing.assert_close(info_nce(a, b, torch.tensor(10.0)), capped)
    assert not torch.allclose(info_nce(a, b, torch.tensor(1.0)), capped)


def test_rank_gauss_by_hand():
    y = torch.tensor([[0.3, -5.0, 0.1, 9.0], [1.0, 2.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    normal = torch.distributions.Normal(0.0, 1.0)
    q3 = normal.icdf(torch.tensor([0.5 / 3, 1.5 / 3, 2.5 / 3]))  # ranks 1..3 of 3
    q2 = normal.icdf(torch.tensor([0.25, 0.75]))
    expected = torch.tensor([[q3[2], q3[0], q3[1], 0.0], [q2[0], q2[1], 0.0, 0.0]])
    torch.testing.assert_close(cs_rank_gauss(y, mask), expected)


def test_correlation_loss_by_hand():
    score = torch.tensor([[1.0, 2.0, 3.0, 100.0], [1.0, 2.0, 0.0, 0.0]])
    target = torch.tensor([[2.0, 4.0, 6.5, -50.0], [5.0, 5.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    a, b = torch.tensor([-1.0, 0.0, 1.0]), torch.tensor([2.0, 4.0, 6.5]) - 12.5 / 3
    corr0 = (a * b).sum() / torch.sqrt((a**2).sum() * (b**2).sum())
    # the second day has a constant target: correlation 0 (eps keeps it finite)
    torch.testing.assert_close(correlation_loss(score, target, mask), 1.0 - corr0 / 2, atol=1e-5, rtol=0)
    assert float(correlation_loss(score[:, :1], target[:, :1], mask[:, :1])) == 0.0  # fewer than 2 stocks


def test_cs_feature_zscore_uses_the_days_present_stocks_only():
    x, mask, _ = _batch(TINY)
    z = cs_feature_zscore(x, mask)
    present = mask[0, 0]
    day = z[0, 0][present]
    torch.testing.assert_close(day.mean(0), torch.zeros(TINY.n_features), atol=1e-5, rtol=0)
    torch.testing.assert_close(day.std(0, unbiased=False), torch.ones(TINY.n_features), atol=1e-3, rtol=0)
    assert float(z[0, :, 2].abs().sum()) == 0.0  # the absent stock stays zero
    later = x.clone()
    later[:, -1] += 100.0  # the last day's values do not move earlier days
    torch.testing.assert_close(cs_feature_zscore(later, mask)[:, :-1], z[:, :-1])


def test_whether_a_label_is_known_does_not_move_other_stocks_scores():
    """The prior (the score) sees the day's stocks; a missing future label only drops a stock from the losses."""
    torch.manual_seed(0)
    model = Storm(TINY).eval()
    x, mask, y = _batch(TINY)
    unknown = y.clone()
    unknown[:, 3] = float("nan")
    full, partial = model(x, mask, y), model(x, mask, unknown)
    torch.testing.assert_close(partial.pred, full.pred, rtol=0, atol=0)
    torch.testing.assert_close(partial.pred, model(x, mask).pred, rtol=0, atol=0)


def test_pooling_averages_present_chunks_only():
    """A stock that lists during the window is summarised by the chunks it was present for."""
    torch.manual_seed(0)
    model = Storm(TINY).eval()
    x, mask, _ = _batch(TINY, b=2)
    mask[1, :4, 4] = False  # absent for the first time chunk (4 days)
    emb = model(x, mask).embeddings
    width = 2 * TINY.d_model
    torch.testing.assert_close(emb.stock[1, 4, :width], emb.ts_tokens[1, 1:, 4].mean(0))
    torch.testing.assert_close(emb.stock[1, 0, :width], emb.ts_tokens[1, :, 0].mean(0))


@pytest.mark.parametrize("ablation", [None, "ts_only", "cs_only"])
def test_every_parameter_gets_a_gradient(ablation):
    """DDP fails on a parameter that takes no part in the loss ("Expected to have finished reduction")."""
    cfg = TINY if ablation is None else TINY.ablation(ablation)
    torch.manual_seed(0)
    model = Storm(cfg)
    model(*_batch(cfg)).loss.backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


def test_shared_time_positions_make_the_score_follow_the_stock_not_its_slot():
    """With time positions shared by all stocks and no CS branch, permuting the stocks permutes the scores."""
    cfg = replace(TINY, shared_time_positions=True).ablation("ts_only")
    torch.manual_seed(0)
    model = Storm(cfg).eval()
    x, mask, _ = _batch(cfg)
    order = torch.tensor([5, 3, 1, 0, 2, 4])
    torch.testing.assert_close(model(x[:, :, order], mask[:, :, order]).pred, model(x, mask).pred[:, order])
    slotted = Storm(replace(cfg, shared_time_positions=False)).eval()
    assert not torch.allclose(slotted(x[:, :, order], mask[:, :, order]).pred, slotted(x, mask).pred[:, order])


def test_the_stock_embedding_follows_the_stock_named_by_stock_ids():
    """Shuffled columns with their stock_ids score as the unshuffled window does, stock by stock;
    without the ids the embedding would sit on the column, not the stock."""
    cfg = replace(TINY, shared_time_positions=True, stock_embedding=3).ablation("ts_only")
    torch.manual_seed(0)
    model = Storm(cfg).eval()
    x, mask, _ = _batch(cfg)
    order = torch.tensor([5, 3, 1, 0, 2, 4])
    expected = model(x, mask).pred[:, order]
    torch.testing.assert_close(model(x[:, :, order], mask[:, :, order], stock_ids=order).pred, expected)
    assert not torch.allclose(model(x[:, :, order], mask[:, :, order]).pred, expected)
    assert model.factor.identity.weight.shape == (cfg.n_stocks, 3)
    with pytest.raises(ValueError, match="Expected stock_ids as 6 integer slots"):
        model(x, mask, stock_ids=order[:5])


def test_without_a_stock_embedding_stock_ids_change_nothing():
    torch.manual_seed(0)
    model = Storm(TINY).eval()
    x, mask, _ = _batch(TINY)
    shuffled = torch.tensor([5, 3, 1, 0, 2, 4])
    assert torch.equal(model(x, mask, stock_ids=shuffled).pred, model(x, mask).pred)
    assert model.factor.identity is None


@pytest.mark.parametrize("label_transform", ["zscore", "rank_gauss"])
def test_options_add_their_terms(label_transform):
    cfg = replace(TINY, label_transform=label_transform, w_corr=0.5, dropout=0.1)
    torch.manual_seed(0)
    out = Storm(cfg)(*_batch(cfg))
    assert "corr" in out.loss_terms and 0.0 <= float(out.loss_terms["corr"]) <= 2.0
    assert "corr" not in Storm(TINY)(*_batch(TINY)).loss_terms


def test_inference_attends_through_sdpa_not_the_layers_native_fast_path(monkeypatch):
    """The native fast path materialises every attention matrix (40 GiB for 64 paper-preset SP500
    windows): inference must take the memory-efficient SDPA path, as training does."""

    def refuse(*args, **kwargs):
        raise AssertionError("the transformer layer's native fast path was taken")

    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", refuse)
    model = Storm(TINY).eval()
    x, mask, _ = _batch(TINY)
    with torch.no_grad():
        pred = model(x, mask).pred
    assert pred.shape == (3, TINY.n_stocks) and torch.isfinite(pred).all()
    assert torch.backends.mha.get_fastpath_enabled()  # the caller's setting is back


def _saved_bytes_and_gradients(model: Storm, batch) -> tuple[int, Tensor, dict[str, Tensor]]:
    """Bytes the forward pass keeps for the backward pass, the loss, and every parameter's gradient."""
    saved = 0

    def keep(tensor: Tensor) -> Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    model.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss = model(*batch).loss
    loss.backward()
    return saved, loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_keeps_less_for_backward_and_computes_the_same_gradients():
    cfg = replace(TINY, n_stocks=12, window=16, dropout=0.1)  # dropout: the recomputation replays the same masks
    batch = _batch(cfg)
    torch.manual_seed(0)
    model = Storm(cfg)
    torch.manual_seed(1)
    plain_bytes, plain_loss, plain_grads = _saved_bytes_and_gradients(model, batch)
    assert checkpoint_activations(model) == 4  # encoder and decoder of each branch
    torch.manual_seed(1)
    bytes_, loss, grads = _saved_bytes_and_gradients(model, batch)
    assert bytes_ < 0.5 * plain_bytes
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=0)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=0, atol=0, msg=name)
