"""Every process: SDE coefficients consistent with the marginals, finiteness where adaptive solvers
probe, time grids, the log-SNR inverse, and the Bayes posterior against brute force."""
from __future__ import annotations

import math

import pytest
import torch

from diffusion.processes import DDPM, EDM, SPACINGS, VESDE, VPSDE, RectifiedFlow, SubVPSDE, posterior

PROCESSES = [VPSDE(), SubVPSDE(), VESDE(), DDPM("linear", 1000), DDPM("cosine", 1000)]
IDS = ["vp", "subvp", "ve", "ddpm-linear", "ddpm-cosine"]
# the coefficient checks cover EDM and rectified flow too (their own tests: tests/processes/test_edm_rf.py)
EVERY = PROCESSES + [EDM(), RectifiedFlow(), RectifiedFlow(t_sampling="logit_normal")]
EVERY_IDS = IDS + ["edm", "rf", "rf-logit-normal"]


def interior_times(p, n=9):
    """Times strictly inside [t_eps, t_max], away from DDPM's integer kinks."""
    if isinstance(p, DDPM):
        return torch.linspace(0, p.t_max - 1, n, dtype=torch.float64).round() + 0.5
    return torch.linspace(p.t_eps + 0.01, p.t_max - 0.01, n, dtype=torch.float64)


@pytest.mark.parametrize("p", EVERY, ids=EVERY_IDS)
def test_f_and_g_match_the_marginals_by_finite_differences(p):
    """f = d log alpha/dt and g^2 = d sigma^2/dt - 2 f sigma^2: central differences in float64 with h = 1e-6
    (t-units of the process) are accurate to ~1e-8 relative; asserted 1e-6."""
    t = interior_times(p)
    h = 1e-6 * (p.t_max - p.t_eps)
    dlog_alpha = (p.log_alpha(t + h) - p.log_alpha(t - h)) / (2 * h)
    dsigma2 = (p.sigma2(t + h) - p.sigma2(t - h)) / (2 * h)
    torch.testing.assert_close(p.f_coef(t), dlog_alpha, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(p.g2(t), dsigma2 - 2 * p.f_coef(t) * p.sigma2(t), rtol=1e-6, atol=1e-9)
    x = torch.randn(len(t), 3, dtype=torch.float64)
    torch.testing.assert_close(p.f(x, t), p.f_coef(t)[:, None] * x)
    torch.testing.assert_close(p.g(t) ** 2, p.g2(t))
    torch.testing.assert_close(p.div_f(x, t), 3 * p.f_coef(t))
    torch.testing.assert_close(p.log_snr(t), 2 * p.log_alpha(t) - p.sigma2(t).log())


@pytest.mark.parametrize("p", EVERY, ids=EVERY_IDS)
def test_coefficients_finite_outside_the_time_range(p):
    """Adaptive ODE solvers evaluate stages before t_eps and after t_max (torchdiffeq steps past the end
    and interpolates back): every coefficient must stay finite there, and at the ends themselves (alpha(1) = 0
    would make rectified flow's f and g^2 infinite), in float64 and float32."""
    span = p.t_max - p.t_eps
    t = torch.tensor([p.t_eps - 0.5 * span, p.t_eps - 1e-3 * span, -1e-9, 0.0, p.t_eps, p.t_max, 1.0,
                      p.t_max + 1e-3 * span, p.t_max + 0.5 * span], dtype=torch.float64)
    x = torch.ones(len(t), 2, dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        tt = t.to(dtype)
        for value in (p.alpha(tt), p.sigma(tt), p.g(tt), p.f(x.to(dtype), tt), p.div_f(x.to(dtype), tt),
                      p.f_coef(tt), p.g2(tt), p.sigma2(tt)):
            assert torch.isfinite(value).all(), (p, dtype, value)
        assert (p.sigma(tt) >= 0).all() and (p.g2(tt) >= 0).all()


@pytest.mark.parametrize("p", PROCESSES, ids=IDS)
def test_t_from_log_snr_inverts_log_snr(p):
    """float64 round trip on [t_eps, t_max]: closed forms to ~1e-12, bisection (64 halvings) to ~1e-15
    of the range; asserted 1e-9 of the range."""
    t = torch.cat([torch.tensor([p.t_eps, p.t_max], dtype=torch.float64), interior_times(p, 20)])
    back = p.t_from_log_snr(p.log_snr(t))
    assert (back - t).abs().max() <= 1e-9 * (p.t_max - p.t_eps) + 1e-12


@pytest.mark.parametrize("p", PROCESSES, ids=IDS)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_timesteps_for_every_spacing(p, spacing):
    steps = 12
    t = p.timesteps(steps, spacing)
    assert t.dtype == torch.float64 and t.shape == (steps,)
    assert t[0].item() == pytest.approx(p.t_max, rel=1e-12) and t[-1].item() == pytest.approx(p.t_min, rel=1e-12, abs=1e-15)
    assert (t[1:] < t[:-1]).all(), "strictly descending"
    if isinstance(p, DDPM) and spacing in ("uniform", "quadratic"):
        assert torch.equal(t, t.round())
        return  # the rounding breaks exact equal spacing
    u = torch.linspace(0, 1, steps, dtype=torch.float64)
    if spacing == "uniform":
        want = t[0] + (t[-1] - t[0]) * u
    elif spacing == "quadratic":  # sqrt((t - t_min)/(t_max - t_min)) uniform
        want = t[-1] + (t[0] - t[-1]) * (1 - u) ** 2
    else:
        lam = p.log_snr(t)
        if spacing == "logsnr":
            gaps = lam[1:] - lam[:-1]
        else:  # karras: uniform in (sigma/alpha)^(1/rho), rho = 7
            r = torch.exp(-lam / 2) ** (1 / 7)
            gaps = r[1:] - r[:-1]
        torch.testing.assert_close(gaps, gaps.mean().expand_as(gaps), rtol=1e-6, atol=1e-9)
        return
    torch.testing.assert_close(t, want, rtol=1e-12, atol=1e-12)


def test_timesteps_reject_bad_input():
    p = VPSDE()
    with pytest.raises(ValueError, match="spacing"):
        p.timesteps(10, "cubic")
    with pytest.raises(ValueError, match="steps"):
        p.timesteps(0)
    assert p.timesteps(1).tolist() == [p.t_max]


def _transition(p, s: float, t: float, n: int = 20001) -> tuple[float, float]:
    """The linear SDE's kernel x_t | x_s from its coefficients alone (trapezoid quadrature):
    mean factor exp(int_s^t f), variance int_s^t exp(2 int_u^t f) g(u)^2 du."""
    u = torch.linspace(s, t, n, dtype=torch.float64)
    f = p.f_coef(u)
    F = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(f, u)])  # int_s^u f
    factor = math.exp(F[-1].item())
    var = torch.trapezoid(torch.exp(2 * (F[-1] - F)) * p.g2(u), u).item()
    return factor, var


@pytest.mark.parametrize("p", [VPSDE(), SubVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("s,t", [(0.05, 0.1), (0.2, 0.7), (0.5, 1.0)])
def test_posterior_of_continuous_processes_by_brute_force(p, s, t):
    """x_s = alpha_s x0 + sigma_s z, x_t = k x_s + sqrt(v) w with (k, v) the SDE transition integrated
    numerically from f and g; condition the 2x2 joint on x_t. Quadrature error ~1e-8; asserted 1e-6."""
    a_s, s2_s = p.alpha(torch.tensor([s], dtype=torch.float64)).item(), p.sigma2(torch.tensor([s], dtype=torch.float64)).item()
    k, v = _transition(p, s, t)
    c11, c12, c22 = s2_s, k * s2_s, k**2 * s2_s + v
    gain = c12 / c22
    want = torch.tensor([a_s - gain * k * a_s, gain, c11 - c12**2 / c22], dtype=torch.float64)
    got = torch.cat(posterior(p, torch.tensor([t], dtype=torch.float64), torch.tensor([s], dtype=torch.float64)))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-10)
    # the numerical transition also reproduces the marginal at t
    a_t = p.alpha(torch.tensor([t], dtype=torch.float64)).item()
    assert abs(k * a_s - a_t) < 1e-6 * a_t
    assert abs(c22 - p.sigma2(torch.tensor([t], dtype=torch.float64)).item()) < 1e-6 * c22
