"""DDPM: the Bayes posterior and the marginals against brute force from the one-step kernels."""
from __future__ import annotations

import pytest
import torch

from diffusion import processes
from diffusion.processes import DDPM, VPSDE, posterior


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("t", [0, 1, 2, 10, 500, 998, 999])
def test_posterior_equals_conditioning_the_joint(schedule, t):
    """(x_{t-1}, x_t) | x_0 is jointly Gaussian; conditioning its 2x2 covariance on x_t must give
    posterior(t, t-1). float64 throughout, so 1e-10 relative."""
    p = DDPM(schedule)
    beta = p.betas[t]
    abar_prev = p.alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0, dtype=torch.float64)
    a_prev, v_prev = abar_prev.sqrt(), 1 - abar_prev  # x_{t-1} = a_prev x0 + sqrt(v_prev) z
    k = (1 - beta).sqrt()  # x_t = k x_{t-1} + sqrt(beta) w
    c11, c12, c22 = v_prev, k * v_prev, k**2 * v_prev + beta
    gain = c12 / c22
    want_c_xt, want_var = gain, c11 - c12**2 / c22
    want_c_x0 = a_prev - gain * k * a_prev  # mean of x_{t-1} minus gain times mean of x_t, per unit x0
    c_x0, c_xt, var = posterior(p, torch.tensor([float(t)]), torch.tensor([t - 1.0]))
    torch.testing.assert_close(c_xt[0], want_c_xt, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(var[0], want_var, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(c_x0[0], want_c_x0, rtol=1e-10, atol=1e-14)
    if t > 0:  # the textbook beta_tilde
        torch.testing.assert_close(var[0], (1 - p.alphas_cumprod[t - 1]) / (1 - p.alphas_cumprod[t]) * beta, rtol=1e-10, atol=0)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_marginal_is_composition_of_one_step_kernels(schedule):
    """Composing N(sqrt(1-beta_i) m, (1-beta_i) v + beta_i) from (1, 0) gives alpha(t) and sigma(t)^2
    at every integer t (1e-10 relative, float64 accumulation over 1000 steps)."""
    p = DDPM(schedule)
    m, v, ms, vs = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), [], []
    for beta in p.betas:
        m, v = (1 - beta).sqrt() * m, (1 - beta) * v + beta
        ms.append(m)
        vs.append(v)
    t = torch.arange(p.num_steps, dtype=torch.float64)
    torch.testing.assert_close(p.alpha(t), torch.stack(ms), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(p.sigma(t) ** 2, torch.stack(vs), rtol=1e-10, atol=1e-14)
    # t = -1 is the clean data
    assert p.alpha(torch.tensor([-1.0])).item() == 1.0 and p.sigma(torch.tensor([-1.0])).item() == 0.0


def test_ddpm_linear_matches_vp_sde_marginals():
    """Song et al. app. B: DDPM(linear, N=1000) step i is VP(0.1, 20) at t = (i+1)/N. The discrete
    product -sum log(1 - beta_i) differs from B(t) by O(beta^2) and the grids by O(1/N): measured max
    |alpha| diff 1.0e-3 and |sigma| diff 1.3e-3; asserted 2e-3 (a wrong time map is off by > 1e-2)."""
    ddpm, vp = DDPM("linear", 1000), VPSDE(0.1, 20.0)
    i = torch.arange(1000, dtype=torch.float64)
    t = (i + 1) / 1000
    assert (ddpm.alpha(i) - vp.alpha(t)).abs().max() < 2e-3
    assert (ddpm.sigma(i) - vp.sigma(t)).abs().max() < 2e-3


def test_ddpm_timesteps_round_to_step_indices_and_reject_too_many():
    p = DDPM("linear", 100)
    t = p.timesteps(10, "uniform")
    assert torch.equal(t, t.round()) and t[0] == 99 and t[-1] == 0
    with pytest.raises(ValueError, match="exceed"):
        p.timesteps(101)
    with pytest.raises(ValueError, match="schedule"):
        DDPM("quadratic")
    assert processes.DDPM("cosine").betas.max() <= 0.999
