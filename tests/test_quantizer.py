"""Vector quantiser: nearest codes, straight-through gradients, each loss against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from storm_bt.model.quantizer import VectorQuantizer, diversity_loss, orthogonality_loss


def _tiny() -> VectorQuantizer:
    vq = VectorQuantizer(codebook_size=3, dim=2, dead_code_steps=2)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]))
    return vq


def test_nearest_code_and_losses_by_hand():
    vq = _tiny().eval()
    z = torch.tensor([[[0.9, 0.1], [0.1, 1.5]]])  # nearest: code 1, then code 2
    out = vq(z)
    assert out.codes.tolist() == [[1, 2]]
    torch.testing.assert_close(out.quantized, torch.tensor([[[1.0, 0.0], [0.0, 2.0]]]))
    sq_err = ((0.1**2 + 0.1**2) + (0.1**2 + 0.5**2)) / 4  # mean over 2 tokens x 2 dims
    assert out.codebook_loss.item() == pytest.approx(sq_err)
    assert out.commit_loss.item() == pytest.approx(sq_err)
    # cosine(e0, .) is 0 for the zero vector after normalisation; e1 . e2 = 0: only the diagonal misses
    assert out.ortho_loss.item() == pytest.approx(1.0 / 9.0)  # (0 - 1)^2 for the zero code, over K^2


def test_diversity_loss_by_hand():
    d = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    p = torch.softmax(-d, dim=-1).mean(0)  # symmetric -> uniform [0.5, 0.5]
    assert diversity_loss(d).item() == pytest.approx((p * p.log()).sum().item())
    assert diversity_loss(d).item() == pytest.approx(-math.log(2))  # maximal entropy of 2 codes
    collapsed = torch.tensor([[0.0, 9.0], [0.0, 9.0]])
    assert diversity_loss(collapsed).item() > diversity_loss(d).item()


def test_orthogonality_loss_by_hand():
    e = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    cos = 1 / math.sqrt(2)
    assert orthogonality_loss(e).item() == pytest.approx(2 * cos**2 / 4)
    assert orthogonality_loss(torch.eye(3)).item() == pytest.approx(0.0)


def test_straight_through_gradient_and_mask():
    vq = _tiny().eval()
    z = torch.tensor([[[0.9, 0.1], [5.0, 5.0]]], requires_grad=True)
    out = vq(z, mask=torch.tensor([[True, False]]))
    out.quantized.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))  # identity through the quantiser
    assert out.codebook_loss.item() == pytest.approx((0.1**2 + 0.1**2) / 2)  # masked token ignored


@pytest.mark.parametrize("term", ["ortho_loss", "diversity_loss"])
def test_regularisers_alone_change_the_codebook(term):
    """Trained alone, each regulariser moves the codebook (it was inert in the reference code)."""
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=16, dim=8)
    before = vq.codebook.detach().clone()
    start = getattr(vq(torch.randn(4, 10, 8)), term).item()
    opt = torch.optim.Adam(vq.parameters(), lr=0.05)
    for _ in range(50):
        opt.zero_grad()
        getattr(vq(torch.randn(4, 10, 8)), term).backward()
        opt.step()
    assert not torch.allclose(vq.codebook, before)
    assert getattr(vq(torch.randn(4, 10, 8)), term).item() < start


def test_dead_codes_are_reseeded_from_the_batch_and_usage_is_counted():
    vq = _tiny().train()
    z = torch.tensor([[[0.9, 0.1], [1.1, -0.1]]])  # always code 1: codes 0 and 2 go unused
    vq(z)
    assert vq.steps_unused.tolist() == [1, 0, 1]
    vq(z)
    reseeded = vq.codebook.detach()
    assert all(any(torch.allclose(reseeded[k], z[0, i]) for i in range(2)) for k in (0, 2))
    assert vq.steps_unused.tolist() == [0, 0, 0]
    assert vq.reset_usage().tolist() == [0, 4, 0] and vq.usage.sum() == 0
