"""The probability-flow ODE sampler, encode/decode, and the DDPM -> VP SDE limit."""
from __future__ import annotations

import pytest
import torch

from diffusion import processes
from diffusion.samplers import CountingModel, decode, encode, probability_flow_drift, sample
from diffusion.toy import GaussianMixture

from .helpers import N_SAMPLES, all_processes, gaussian_flow


@pytest.mark.parametrize("process", all_processes(), ids=repr)
def test_ode_reproduces_target(gm, target, process):
    x = sample(process, gm.eps_model(process), (N_SAMPLES, 2), "ode", generator=torch.Generator().manual_seed(0))
    target.check(x, f"ode on {process!r}")


def test_wrong_drift_fails_the_target_check(gm, target):
    process = processes.VPSDE()
    exact = gm.eps_model(process)
    x = sample(process, lambda x, t: 0.9 * exact(x, t), (N_SAMPLES, 2), "ode",
               generator=torch.Generator().manual_seed(0))
    assert target.fails(x), target.distances(x)  # measured d^2 = 0.095, logp_gap = -2.35


@pytest.fixture(scope="module")
def gaussian() -> GaussianMixture:
    """One anisotropic Gaussian: its probability-flow map is linear and known in closed form (``gaussian_flow``)."""
    gm = GaussianMixture.random(d=3, k=1, spread=1.0, scale=(0.05, 0.5), seed=3)
    return gm


@pytest.mark.parametrize("process", [processes.VPSDE(), processes.SubVPSDE(), processes.VESDE(),
                                     processes.DDPM("cosine", 1000)], ids=repr)
def test_decode_matches_the_closed_form_flow(gaussian, process):
    """decode(z) at t_min equals the exact flow of z to 1e-6: rtol = atol = 1e-7 in float64 leaves <= 1.5e-7 of
    solver error (measured 1.4e-7 VP, 7.6e-8 sub-VP, 1.5e-7 VE, 4.2e-8 DDPM-cosine). On DDPM this needs the
    default log-SNR variable: over t the solver misses the jumps of beta(t) and stalls at 1e-3 (see ``ode``)."""
    z = process.prior_std() * torch.randn(32, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = decode(process, gaussian.eps_model(process), z, rtol=1e-7, atol=1e-7)
    exact = gaussian_flow(gaussian, process, z, process.t_max, process.t_min)
    assert (x - exact).abs().max() < 1e-6, float((x - exact).abs().max())


@pytest.mark.parametrize("process", [processes.VPSDE(), processes.VESDE(), processes.DDPM("linear", 1000)], ids=repr)
def test_encode_then_decode_returns_the_input(gm, process):
    """The ODE is invertible: a round trip is exact up to the two solves' tolerances (rtol = atol = 1e-7, float64):
    within 2e-5 (measured 1.8e-6 VP, 3.6e-6 VE, 9.3e-7 DDPM)."""
    x = gm.sample(64, torch.Generator().manual_seed(0))
    model = gm.eps_model(process)
    z = encode(process, model, x, rtol=1e-7, atol=1e-7)
    assert z.std() > 0.5 * process.prior_std()  # the latent is noise-like, not the data
    x_back = decode(process, model, z, rtol=1e-7, atol=1e-7)
    assert (x_back - x).abs().max() < 2e-5, float((x_back - x).abs().max())


def test_ddim_deterministic_converges_to_the_ode(gm):
    """DDIM with eta = 0 is a first-order solver of the same ODE: from the same x_T it converges to the ODE sample
    (mean per-sample error measured 0.0073 at 200 steps, 0.0037 at 400)."""
    process = processes.VPSDE()
    model = gm.eps_model(process)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = sample(process, model, None, "ode", x_T=x_T, rtol=1e-8, atol=1e-8)
    errors = [float((sample(process, model, None, "ddim", steps, x_T=x_T) - exact).norm(dim=1).mean())
              for steps in (200, 400)]
    assert errors[1] < 0.005, errors
    assert 1.7 < errors[0] / errors[1] < 2.3, errors


def test_ddpm_is_the_vp_sde_in_the_limit(gm):
    """DDPM(linear, N=1000) is VPSDE(0.1, 20) discretized at t = (i+1)/N (Song et al. appendix B): alpha and sigma
    agree on the grid to 2e-3 (measured 1.0e-3 and 1.3e-3: beta_i is beta((i+1)/N)/N only to O(1/N)), and so do
    the probability-flow trajectories from the same x_T, compared halfway (DDPM step 499 vs VP t = 0.5) and at the
    end. The cosine schedule, another process, is far off halfway: the comparison can fail."""
    ddpm, vp, cosine = processes.DDPM("linear", 1000), processes.VPSDE(0.1, 20.0), processes.DDPM("cosine", 1000)
    i = torch.arange(1000, dtype=torch.float64)
    assert (ddpm.alpha(i) - vp.alpha((i + 1) / 1000)).abs().max() < 2e-3
    assert (ddpm.sigma(i) - vp.sigma((i + 1) / 1000)).abs().max() < 2e-3
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def flow(process, t_end):
        return decode(process, gm.eps_model(process), x_T, rtol=1e-6, atol=1e-6, t_min=t_end)

    halfway_vp = flow(vp, 0.5)
    gap = {name: float((flow(p, 499.0) - halfway_vp).norm(dim=1).mean())
           for name, p in [("linear", ddpm), ("cosine", cosine)]}
    end_gap = float((flow(ddpm, 0.0) - flow(vp, 1e-3)).norm(dim=1).mean())
    # measured: 6.7e-4 halfway, 8.6e-5 at the end (the O(1/N) schedule gap above), cosine halfway 0.50
    assert gap["linear"] < 3e-3 and end_gap < 3e-3, (gap, end_gap)
    assert gap["cosine"] > 0.1, gap


def test_fixed_grid_methods_use_the_steps():
    process = processes.VPSDE()
    model = CountingModel(lambda x, t: x)
    sample(process, model, (4, 2), "ode", steps=10, generator=torch.Generator().manual_seed(0), method="euler")
    assert model.nfe == 10  # 9 Euler steps over the grid + the final denoising
    model.nfe = 0
    sample(process, model, (4, 2), "ode", steps=10, generator=torch.Generator().manual_seed(0), method="rk4")
    assert model.nfe == 9 * 4 + 1


def test_probability_flow_drift_closed_form(gaussian):
    """For a Gaussian, score = -(Sigma_t)^-1 (x - alpha mu), Sigma_t = alpha^2 Sigma + sigma^2 I."""
    process = processes.SubVPSDE()
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((8,), 0.3, dtype=torch.float64)
    alpha, sigma = process.alpha(t[:1]), process.sigma(t[:1])
    cov_t = alpha**2 * gaussian.covs[0] + sigma**2 * torch.eye(3, dtype=torch.float64)
    score = -torch.linalg.solve(cov_t, (x - alpha * gaussian.means[0]).T).T
    expected = process.f_coef(t[:1]) * x - 0.5 * process.g2(t[:1]) * score
    got = probability_flow_drift(process, gaussian.eps_model(process), x, t)
    assert (got - expected).abs().max() < 1e-12
