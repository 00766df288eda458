"""The Gaussian mixture's closed forms against scipy, quadrature and autograd."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from diffusion.processes import VESDE, VPSDE
from diffusion.toy import GaussianMixture


def test_log_prob_matches_scipy_for_noised_marginals():
    """log sum_k w_k N(x; alpha mu_k, alpha^2 Sigma_k + sigma^2 I) from scipy, d = 5: 1e-10 absolute."""
    gm = GaussianMixture.random(d=5, k=4, seed=2)
    x = torch.randn(16, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for alpha, sigma in [(1.0, 0.0), (0.8, 0.3), (0.1, 2.0)]:
        want = logsumexp(np.stack([math.log(w) + multivariate_normal(alpha * m.numpy(), alpha**2 * c.numpy() + sigma**2 * np.eye(5)).logpdf(x.numpy())
                                   for w, m, c in zip(gm.weights, gm.means, gm.covs)]), axis=0)
        np.testing.assert_allclose(gm.log_prob(x, alpha, sigma).numpy(), want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("alpha,sigma", [(1.0, 0.0), (0.7, 0.5)])
def test_density_integrates_to_one(alpha, sigma):
    """2-D grid quadrature over [-6, 6]^2 at spacing 0.02 (components' std >= 0.1): 1e-4."""
    gm = GaussianMixture.random(d=2, k=3, scale=(0.1, 0.4), seed=3)
    g = torch.linspace(-6, 6, 601, dtype=torch.float64)
    xx = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    mass = gm.log_prob(xx, alpha, sigma).exp().sum().item() * (g[1] - g[0]).item() ** 2
    assert abs(mass - 1) < 1e-4


def test_score_is_the_gradient_of_log_prob_and_eps_model_is_minus_sigma_score():
    gm = GaussianMixture.random(d=4, k=3, seed=4)
    x = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    alpha, sigma = torch.linspace(0.2, 1.0, 8, dtype=torch.float64), torch.linspace(0.05, 1.5, 8, dtype=torch.float64)
    (grad,) = torch.autograd.grad(gm.log_prob(x, alpha, sigma).sum(), x)
    torch.testing.assert_close(gm.score(x.detach(), alpha, sigma), grad, rtol=1e-9, atol=1e-9)
    for p in (VPSDE(), VESDE()):
        t = torch.linspace(0.1, 0.9, 8, dtype=torch.float64)
        a, s = p.alpha(t), p.sigma(t)
        torch.testing.assert_close(gm.eps_model(p)(x.detach(), t), -s[:, None] * gm.score(x.detach(), a, s))
        torch.testing.assert_close(gm.marginal_log_prob(p, x.detach(), t), gm.log_prob(x.detach(), a, s))


def test_responsibilities_and_image_shapes():
    gm = GaussianMixture.random(d=4, k=3, seed=5)
    x = gm.sample(6, generator=torch.Generator().manual_seed(0), shape=(1, 2, 2))
    assert x.shape == (6, 1, 2, 2)
    torch.testing.assert_close(gm.responsibilities(x).sum(1), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(gm.log_prob(x), gm.log_prob(x.reshape(6, 4)))
    assert gm.score(x, 0.5, 0.5).shape == x.shape


def test_samples_have_the_mixture_moments():
    """40000 draws: mean within 4 standard errors per coordinate, covariance within 0.03."""
    gm = GaussianMixture.random(d=3, k=3, seed=6)
    x = gm.sample(40000, generator=torch.Generator().manual_seed(1))
    se = x.std(0) / len(x) ** 0.5
    assert ((x.mean(0) - gm.mean()).abs() < 4 * se).all()
    assert (torch.cov(x.T) - gm.cov()).abs().max() < 0.03


def test_flow_map_of_one_gaussian_matches_a_fine_ode_solve():
    """The closed-form flow map of one full-covariance Gaussian equals 200 steps of DPM-Solver++(3M) on its exact
    eps (1e-6), on VP and EDM; a mixture has none."""
    from diffusion import sample
    from diffusion.processes import EDM, VPSDE

    gm = GaussianMixture.random(3, k=1, seed=5)
    for process in (VPSDE(), EDM()):
        times = process.timesteps(201, "logsnr")
        x_T = process.prior_sample((64, 3), torch.Generator().manual_seed(0), dtype=torch.float64)
        solved = sample(process, gm.eps_model(process), None, "dpmpp_3m", x_T=x_T, timesteps=times.tolist())
        exact = gm.flow_map(process, x_T, float(times[0]), float(times[-1]))
        torch.testing.assert_close(solved, exact, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="one Gaussian"):
        GaussianMixture.random(2, k=2).flow_map(VPSDE(), torch.zeros(1, 2), 0.5, 0.1)
