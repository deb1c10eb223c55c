"""Muon + Nesterov SGD as one optimizer: the SGD part is torch's SGD, the Muon part whitens
each filter bank's update, and the trainer uses it end to end."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from engine.cifar.optim import NS_COEFFICIENTS, MuonSGD, orthogonalize


@pytest.mark.parametrize("shape", [(12, 108), (96, 48), (64, 64)])
def test_orthogonalize_flattens_the_spectrum_and_keeps_the_singular_vectors(shape):
    torch.manual_seed(0)
    # A badly conditioned matrix: singular values from 1e-3 to 10.
    u, _ = torch.linalg.qr(torch.randn(shape[0], shape[0]))
    v, _ = torch.linalg.qr(torch.randn(shape[1], shape[1]))
    k = min(shape)
    s = torch.logspace(-3, 1, k)
    g = u[:, :k] @ torch.diag(s) @ v[:, :k].T
    out = orthogonalize(g, steps=5)
    singular = torch.linalg.svdvals(out)
    # Muon's coefficients trade exactness for speed: singular values near 1, not exactly 1,
    # except the tiniest directions, which grow but need not reach 1.
    assert singular.max() < 1.25
    assert (singular[: k // 2] > 0.65).all()
    # same singular vectors: out ≈ U diag(s') V^T with s' > 0
    s_prime = torch.diag(u[:, :k].T @ out @ v[:, :k])
    assert (s_prime > 0).all()
    off_diagonal = u[:, :k].T @ out @ v[:, :k] - torch.diag(s_prime)
    assert off_diagonal.abs().max() < 1e-3


@pytest.mark.parametrize("shape", [(48, 432), (1728, 192), (12, 108)])
@pytest.mark.parametrize("lowest", [1e-2, 1e-8])
def test_short_side_iteration_equals_the_published_one(shape, lowest):
    torch.manual_seed(3)
    m, n = min(shape), max(shape)
    u, _ = torch.linalg.qr(torch.randn(m, m))
    v, _ = torch.linalg.qr(torch.randn(n, m))
    g = u @ torch.diag(torch.logspace(math.log10(lowest), 0, m)) @ v.T
    g = g.T if shape[0] > shape[1] else g
    a, b, c = NS_COEFFICIENTS
    x = g / g.norm()
    x = x.T if shape[0] > shape[1] else x
    for _ in range(3):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    x = x.T if shape[0] > shape[1] else x
    torch.testing.assert_close(orthogonalize(g, steps=3), x, rtol=0, atol=1e-5)


def test_sgd_groups_match_torch_nesterov_sgd():
    torch.manual_seed(1)
    ours = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 3))
    theirs = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 3))
    theirs.load_state_dict(ours.state_dict())
    opt_ours = MuonSGD(ours.parameters(), lr=0.1, momentum=0.85, weight_decay=1e-2)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.85, nesterov=True,
                                 weight_decay=1e-2)
    for step in range(5):
        x = torch.randn(8, 5, generator=torch.Generator().manual_seed(step))
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_muon_group_normalizes_filters_and_steps_along_the_whitened_gradient():
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 8, 3, bias=False)
    with torch.no_grad():
        conv.weight.mul_(50)
    opt = MuonSGD([{"params": [conv.weight], "orthogonalize": True, "normalize": True,
                    "weight_decay": 0.0}], lr=1e-2, momentum=0.6)
    conv(torch.randn(4, 3, 8, 8)).square().mean().backward()
    grad = conv.weight.grad.clone()
    normalized = conv.weight.detach() * (8**0.5 / conv.weight.norm())
    opt.step()
    # first step: Nesterov momentum makes the update (1 + m) g, whitened, times lr
    expected = normalized - 1e-2 * orthogonalize((1.6 * grad).reshape(8, -1)).view_as(grad)
    torch.testing.assert_close(conv.weight.detach(), expected)
    step = normalized - conv.weight.detach()
    assert (step * grad).sum() > 0  # a descent direction
    assert step.norm().item() == pytest.approx(1e-2 * 8**0.5, rel=0.3)  # ~lr per direction


def test_momentum_out_of_range_is_refused():
    with pytest.raises(ValueError, match="momentum"):
        MuonSGD([nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.0)
