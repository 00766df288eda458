"""``GaussianMixture.marginal`` and ``.conditional``: p(x_missing | x_known) in closed form, checked against
Bayes' rule on the joint density and against 1-D quadrature."""
from __future__ import annotations

import pytest
import torch

from diffusion.toy import GaussianMixture


def test_conditional_times_marginal_is_the_joint():
    """log p(x) = log p(x_o) + log p(x_m | x_o) for random x and masks in d = 6 (three components): 1e-10."""
    gm = GaussianMixture.random(d=6, k=3, scale=(0.1, 0.5), seed=4)
    g = torch.Generator().manual_seed(0)
    for known in ([1, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 0]):
        known = torch.tensor(known, dtype=torch.bool)
        for x in gm.sample(4, g):
            cond = gm.conditional(x, known)
            x_m = cond.sample(8, g)
            full = x.repeat(8, 1)
            full[:, ~known] = x_m
            joint = gm.log_prob(full)
            split = gm.marginal(known).log_prob(full[:, known]) + cond.log_prob(x_m)
            torch.testing.assert_close(split, joint, rtol=0, atol=1e-10)


def test_conditional_matches_quadrature_in_2d():
    """p(x_2 | x_1 = c) = p(c, x_2) / int p(c, y) dy on a grid of spacing 0.005 (std >= 0.1): density to 1e-6,
    mean to 1e-7; the conditional weights differ from the prior's, so the check sees Bayes' rule on them."""
    gm = GaussianMixture.random(d=2, k=3, scale=(0.1, 0.4), seed=3)
    y = torch.linspace(-8, 8, 3201, dtype=torch.float64)
    for c in (-0.5, 0.0, 0.7):
        grid = torch.stack([torch.full_like(y, c), y], 1)
        joint = gm.log_prob(grid).exp()
        density = joint / torch.trapezoid(joint, y)
        cond = gm.conditional(torch.tensor([c, 0.0]), torch.tensor([True, False]))
        torch.testing.assert_close(cond.log_prob(y[:, None]).exp(), density, rtol=0, atol=1e-6)
        torch.testing.assert_close(cond.mean()[0], torch.trapezoid(y * density, y), rtol=0, atol=1e-7)
        assert (cond.weights - gm.weights).abs().max() > 0.05


def test_conditional_samples_have_its_moments():
    """2e5 draws: mean and covariance within 0.01 of the closed-form mixture moments."""
    gm = GaussianMixture.random(d=4, k=3, seed=1)
    cond = gm.conditional(gm.sample(1, torch.Generator().manual_seed(5))[0], torch.tensor([True, False, True, False]))
    x = cond.sample(200_000, torch.Generator().manual_seed(6))
    torch.testing.assert_close(x.mean(0), cond.mean(), rtol=0, atol=0.01)
    torch.testing.assert_close(torch.cov(x.T), cond.cov(), rtol=0, atol=0.01)


@pytest.mark.parametrize("known", [[True, True], [False, False], [True, False, True]])
def test_bad_masks(known):
    gm = GaussianMixture.random(d=2, k=2)
    with pytest.raises(ValueError, match="some but not all True"):
        gm.conditional(torch.zeros(2), torch.tensor(known))
