"""The losses against a straightforward float64 re-implementation of the written formulas."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from htf.model_config import LossConfig
from htf.loss import ezvsl_loss, lvs_loss


def reference_lvs(img: np.ndarray, aud: np.ndarray, eps=0.65, eps2=0.40, tau=0.03, temp=0.07):
    """DESIGN.md §2, literally: A, A0, Pos, Neg (trimap), PosAll, sim1, sim, sim2, CE target 0."""
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))
    b = img.shape[0]
    a = np.einsum("nchw,nc->nhw", img, aud)
    a0 = np.einsum("nchw,mc->nmhw", img, aud)
    pos, neg, pos_all = sig((a - eps) / tau), 1 - sig((a - eps2) / tau), sig((a0 - eps) / tau)
    sim1 = (pos * a).sum((1, 2)) / pos.sum((1, 2))
    sim = (pos_all * a0).sum((2, 3)) / pos_all.sum((2, 3)) * (1 - 100 * np.eye(b))
    sim2 = (neg * a).sum((1, 2)) / neg.sum((1, 2))
    logits = np.concatenate([sim1[:, None], sim, sim2[:, None]], 1) / temp
    m = logits.max(1, keepdims=True)
    logp0 = logits[:, 0] - (m[:, 0] + np.log(np.exp(logits - m).sum(1)))
    return -logp0.mean(), a


def reference_ezvsl(img: np.ndarray, aud: np.ndarray, temp=0.03):
    s = np.einsum("nchw,mc->nmhw", img, aud).reshape(img.shape[0], img.shape[0], -1).max(-1) / temp
    def ce(x):
        m = x.max(1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(x - m).sum(1))
        return (lse - np.diag(x)).mean()
    return 0.5 * (ce(s) + ce(s.T))


def random_features(b: int, c: int = 16, seed: int = 0, spread: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, c, 7, 7, generator=g) * spread + 0.5, dim=1)
    aud = F.normalize(torch.randn(b, c, generator=g) * spread + 0.5, dim=1)
    return img, aud


@pytest.mark.parametrize("b", [1, 2, 5])
def test_lvs_loss_and_map_match_reference_formulas(b):
    img, aud = random_features(b, seed=b)
    loss, amap = lvs_loss(img.double(), aud.double(), LossConfig())
    ref_loss, ref_map = reference_lvs(img.double().numpy(), aud.double().numpy())
    assert amap.shape == (b, 7, 7)
    np.testing.assert_allclose(amap.numpy(), ref_map, rtol=0, atol=1e-12)
    np.testing.assert_allclose(loss.item(), ref_loss, rtol=1e-9)


def test_lvs_loss_float32_matches_reference_within_float_precision():
    img, aud = random_features(8, seed=3)
    loss, _ = lvs_loss(img, aud, LossConfig())
    ref, _ = reference_lvs(img.double().numpy(), aud.double().numpy())
    np.testing.assert_allclose(loss.item(), ref, rtol=1e-4)


def test_lvs_loss_without_trimap_uses_one_minus_pos_as_negatives():
    img, aud = random_features(4, seed=7)
    loss, _ = lvs_loss(img.double(), aud.double(), LossConfig(trimap=False))
    ref, _ = reference_lvs(img.double().numpy(), aud.double().numpy(), eps2=0.65)
    np.testing.assert_allclose(loss.item(), ref, rtol=1e-9)


@pytest.mark.parametrize("value", [1.0, -1.0, 0.0])
def test_lvs_loss_is_finite_on_all_equal_maps(value):
    # Every location has the same cosine: with value 1, 1 - σ(20) is 0 in float32 and the
    # literal formula divides 0 by 0. Our loss stays finite and equals the float64 formula.
    b, c = 3, 4
    aud = F.normalize(torch.ones(b, c), dim=1)
    img = (aud[:, :, None, None] * value).expand(b, c, 7, 7).contiguous()
    if value == 0.0:
        img = torch.zeros(b, c, 7, 7)
    loss, amap = lvs_loss(img, aud, LossConfig())
    assert torch.isfinite(loss) and torch.isfinite(amap).all()
    ref, _ = reference_lvs(img.double().numpy(), aud.double().numpy())
    np.testing.assert_allclose(loss.item(), ref, rtol=1e-4)


def test_lvs_loss_has_finite_gradients_on_all_equal_maps():
    aud = F.normalize(torch.ones(2, 4), dim=1).requires_grad_(True)
    img = aud.detach()[:, :, None, None].expand(2, 4, 7, 7).clone().requires_grad_(True)
    lvs_loss(img, aud, LossConfig())[0].backward()
    assert torch.isfinite(img.grad).all() and torch.isfinite(aud.grad).all()


@pytest.mark.parametrize("b", [1, 6])
def test_ezvsl_loss_matches_reference(b):
    img, aud = random_features(b, seed=11)
    loss, amap = ezvsl_loss(img.double(), aud.double(), LossConfig())
    np.testing.assert_allclose(loss.item(), reference_ezvsl(img.double().numpy(), aud.double().numpy()),
                               rtol=1e-9)
    assert amap.shape == (b, 7, 7)
