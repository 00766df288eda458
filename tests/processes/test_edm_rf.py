"""EDM and rectified flow: coefficients against their definitions and the SDE they come from, training-time
distributions, time grids, marginals and scores against brute force, and rectified flow's prior mismatch. The
checks every process shares (f and g by finite differences, finiteness at and beyond the ends) run on them in
tests/processes/test_processes.py."""
from __future__ import annotations

import math

import pytest
import torch

from diffusion.processes import EDM, RectifiedFlow
from diffusion.toy import GaussianMixture

PROCESSES = [EDM(), RectifiedFlow(), RectifiedFlow(t_sampling="logit_normal")]
IDS = ["edm", "rf", "rf-logit-normal"]


def interior(p, n=9):
    return torch.linspace(p.t_eps + 0.01 * (p.t_max - p.t_eps), p.t_max - 0.01 * (p.t_max - p.t_eps), n, dtype=torch.float64)


def test_closed_forms():
    t = torch.tensor([0.002, 0.3, 1.0, 80.0], dtype=torch.float64)
    edm = EDM()
    torch.testing.assert_close(edm.alpha(t), torch.ones_like(t))
    torch.testing.assert_close(edm.sigma(t), t)
    torch.testing.assert_close(edm.g2(t), 2 * t)
    torch.testing.assert_close(edm.noise_label(t), t.log() / 4)
    assert edm.prior_std() == 80.0 and (edm.t_min, edm.t_eps, edm.t_max) == (0.002, 0.002, 80.0)
    rf = RectifiedFlow()
    t = torch.tensor([0.001, 0.3, 0.7, 0.999], dtype=torch.float64)
    torch.testing.assert_close(rf.alpha(t), 1 - t)
    torch.testing.assert_close(rf.sigma(t), t)
    torch.testing.assert_close(rf.f_coef(t), -1 / (1 - t))
    torch.testing.assert_close(rf.g2(t), 2 * t / (1 - t))
    assert rf.prior_std() == 0.999  # sigma(t_max)


@pytest.mark.parametrize("p", PROCESSES, ids=IDS)
def test_t_from_log_snr_is_the_closed_form_inverse(p):
    t = torch.cat([torch.tensor([p.t_eps, p.t_max], dtype=torch.float64), interior(p, 20)])
    assert (p.t_from_log_snr(p.log_snr(t)) - t).abs().max() <= 1e-12 * p.t_max


def test_edm_default_grid_is_karras_eq5():
    """sigma_i = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho with the process's rho."""
    for rho in (7.0, 3.0):
        p = EDM(rho=rho)
        i = torch.arange(18, dtype=torch.float64)
        want = (80 ** (1 / rho) + i / 17 * (0.002 ** (1 / rho) - 80 ** (1 / rho))) ** rho
        torch.testing.assert_close(p.timesteps(18), want, rtol=1e-12, atol=0)
        torch.testing.assert_close(p.timesteps(18, "default"), want, rtol=1e-12, atol=0)
    torch.testing.assert_close(RectifiedFlow().timesteps(5), torch.linspace(0.999, 0.002, 5, dtype=torch.float64))


def test_training_time_distributions():
    """EDM: log sigma ~ N(p_mean, p_std^2); RF: uniform on [t_eps, t_max] or logit(t) ~ N(m, s^2). 20k draws:
    moments within 5 standard errors (mean SE s/sqrt(n) = 0.0085 for s = 1.2)."""
    n = 20_000
    g = torch.Generator().manual_seed(0)
    log_sigma = EDM(p_mean=-1.2, p_std=1.2).sample_t(n, g).double().log()
    assert abs(log_sigma.mean() + 1.2) < 5 * 1.2 / math.sqrt(n) and abs(log_sigma.std() - 1.2) < 0.03
    t = RectifiedFlow().sample_t(n, g).double()
    assert t.min() >= 1e-3 and t.max() <= 0.999 and abs(t.mean() - 0.5) < 5 * 0.29 / math.sqrt(n)
    t = RectifiedFlow(t_sampling="logit_normal", logit_mean=0.5, logit_std=0.8).sample_t(n, g).double()
    logit = (t / (1 - t)).log()
    assert abs(logit.mean() - 0.5) < 5 * 0.8 / math.sqrt(n) and abs(logit.std() - 0.8) < 0.02
    with pytest.raises(ValueError, match="t_sampling"):
        RectifiedFlow(t_sampling="beta")
    with pytest.raises(ValueError, match="t_max"):
        RectifiedFlow(t_max=1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        EDM(sigma_min=0.0)


def _transition(p, s: float, t: float, n: int = 40001) -> tuple[float, float]:
    """The linear SDE's kernel x_t | x_s from f and g alone (trapezoid quadrature on a grid refined towards t,
    where rectified flow's g^2 = 2t/(1-t) is steep): mean factor exp(int_s^t f), variance int exp(2 int_u^t f) g^2 du."""
    u = s + (t - s) * (1 - (1 - torch.linspace(0, 1, n, dtype=torch.float64)) ** 2)
    F = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(p.f_coef(u), u)])
    return math.exp(F[-1].item()), torch.trapezoid(torch.exp(2 * (F[-1] - F)) * p.g2(u), u).item()


@pytest.mark.parametrize("p", PROCESSES[:2], ids=IDS[:2])
def test_marginals_equal_the_sde_integrated_from_f_and_g(p):
    """From x_{t_eps} = alpha_s x0 + sigma_s z, the SDE integrated numerically must land on alpha_t x0 + sigma_t eps:
    k alpha_s = alpha_t and k^2 sigma_s^2 + v = sigma_t^2 (quadrature error ~1e-8; asserted 1e-6 relative)."""
    s = p.t_eps
    for t in interior(p, 5).tolist() + [p.t_max]:
        k, v = _transition(p, s, t)
        ts = torch.tensor([s, t], dtype=torch.float64)
        (a_s, a_t), (s2_s, s2_t) = p.alpha(ts).tolist(), p.sigma2(ts).tolist()
        assert abs(k * a_s - a_t) <= 1e-6 * a_t, (t, k * a_s, a_t)
        assert abs(k**2 * s2_s + v - s2_t) <= 1e-6 * s2_t, (t, k**2 * s2_s + v, s2_t)


@pytest.mark.parametrize("p", PROCESSES[:2], ids=IDS[:2])
def test_noised_density_and_score_equal_brute_force(p):
    """p_t(x) = E_{x0 ~ data} N(x; alpha x0, sigma^2 I) by Monte Carlo over 400k exact data draws, its score by
    autograd of that average, against the mixture's closed forms at noise levels sigma/alpha in 0.3..5, at points
    drawn from p_t. Log-densities within 5 Monte Carlo standard errors (SE = std(N)/(mean(N) sqrt(n)), ~1e-3) plus
    1e-3; scores within 5e-2 relative (measured < 1e-2). Noising itself is checked by the moments of process.noise."""
    gm = GaussianMixture.random(d=2, k=3, spread=1.0, scale=(0.1, 0.3), seed=0)
    g = torch.Generator().manual_seed(0)
    x0 = gm.sample(400_000, g)
    levels = torch.tensor([0.3, 1.0, 5.0], dtype=torch.float64)
    for level in levels:
        t = p.t_from_log_snr(-2 * level.log().reshape(1))
        a, s = p.alpha(t).item(), p.sigma(t).item()
        xa = (a * gm.sample(6, g) + s * torch.randn(6, 2, generator=g, dtype=torch.float64)).requires_grad_(True)
        diff = xa[:, None, :] - a * x0[None]
        log_n = -0.5 * (diff**2).sum(-1) / s**2 - math.log(2 * math.pi * s**2)
        log_p = torch.logsumexp(log_n, 1) - math.log(len(x0))
        score = torch.autograd.grad(log_p.sum(), xa)[0]
        ratio = (log_n.detach() - log_p.detach()[:, None]).exp()  # N / mean(N)
        se = ratio.std(1) / math.sqrt(len(x0))
        exact = gm.marginal_log_prob(p, xa.detach(), t)
        assert ((log_p.detach() - exact).abs() < 5 * se + 1e-3).all(), (level, log_p, exact, se)
        exact_score = gm.score(xa.detach(), a, s)
        err = (score - exact_score).norm(dim=1) / exact_score.norm(dim=1).clamp_min(1e-3)
        assert err.max() < 5e-2, (level, err)
        eps = torch.randn(200_000, 2, generator=g, dtype=torch.float64)
        xt = p.noise(torch.zeros(200_000, 2, dtype=torch.float64) + 1.0, t.expand(200_000), eps)
        assert abs(xt.mean() - a) < 5 * s / 600 and abs(xt.std() / s - 1) < 0.01


def test_rectified_flow_prior_mismatch_is_as_documented():
    r"""The docstring bound: KL(q_T || N(0, (1-delta)^2 I)) <= delta^2 E|x0|^2 / (2 (1-delta)^2). Measured by
    Monte Carlo (100k draws of q_T, its exact log-density from the mixture) at delta = 0.1, 0.03, 1e-3: the KL
    lies in [-4 SE, bound + 4 SE]; where it is measurable (delta >= 0.03) it is the mean term alone,
    delta^2 |E x0|^2 / (2 (1-delta)^2) (the rest of the bound is the information x_T keeps about x0), within 10%
    + 4 SE; at the default delta = 1e-3 the bound is below 1e-6 nats/dim."""
    gm = GaussianMixture.random(d=2, k=3, spread=1.0, scale=(0.1, 0.3), seed=0)
    g = torch.Generator().manual_seed(1)
    n, d = 100_000, 2
    x0 = gm.sample(n, g)
    second_moment, mean_sq = float((x0**2).sum(1).mean()), float((gm.mean() ** 2).sum())
    for delta in (0.1, 0.03, 1e-3):
        p = RectifiedFlow(t_max=1 - delta)
        bound = delta**2 * second_moment / (2 * (1 - delta) ** 2)
        x_T = p.noise(x0, torch.full((n,), p.t_max, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64))
        gap = gm.marginal_log_prob(p, x_T, p.t_max) - p.prior_log_prob(x_T)
        kl, se = float(gap.mean()), float(gap.std()) / math.sqrt(n)
        assert -4 * se < kl < bound + 4 * se, (delta, kl, se, bound)
        if delta > 0.01:  # measurable
            mean_term = delta**2 * mean_sq / (2 * (1 - delta) ** 2)
            assert abs(kl - mean_term) < 0.1 * mean_term + 4 * se, (delta, kl, se, mean_term)
    assert bound / d < 1e-6
