"""ode_nll against the exact noised log-density of a Gaussian mixture."""
from __future__ import annotations

import copy

import pytest
import torch

from diffusion import likelihood
from diffusion.likelihood.ode import exact_divergence
from diffusion.processes import DDPM, VESDE, VPSDE, SubVPSDE
from diffusion.toy import GaussianMixture

PROCESSES = [VPSDE(), SubVPSDE(), VESDE(), DDPM("linear"), DDPM("cosine")]
IDS = ["vp", "subvp", "ve", "ddpm-linear", "ddpm-cosine"]


def with_exact_prior(process, gm):
    """The process with p_T replaced by the mixture's true marginal at t_max: then the ODE is an exact
    transport and ode_nll must equal -log p_{t_eps} up to solver error alone."""
    p = copy.copy(process)
    p.prior_log_prob = lambda x: gm.marginal_log_prob(process, x, process.t_max).to(x.dtype)
    return p


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_exact_trace_matches_exact_log_density(process, mixture):
    """rtol = atol = 1e-5 dopri5 with p_T exact: measured max errors 3e-5..7e-5 nats/dim; asserted 1e-3."""
    x = mixture.sample(8, generator=torch.Generator().manual_seed(0))
    model = mixture.eps_model(process)
    exact = -mixture.marginal_log_prob(process, x, process.t_eps)
    nll, stats = likelihood.ode_nll(with_exact_prior(process, mixture), model, x, return_stats=True)
    assert nll.shape == (8,) and nll.dtype == x.dtype
    assert (nll - exact).abs().max() / 3 < 1e-3
    assert torch.equal(stats["stderr"], torch.zeros(8)) and stats["nfe"] > 0


def test_uses_the_process_prior(mixture):
    """With the process's own N(0, I) prior the answer moves only by the prior mismatch (< 2e-4 nats/dim
    for VP here), and the tolerances trade accuracy for evaluations."""
    process = VPSDE()
    x = mixture.sample(8, generator=torch.Generator().manual_seed(0))
    exact = -mixture.marginal_log_prob(process, x, process.t_eps)
    fine, fine_stats = likelihood.ode_nll(process, mixture.eps_model(process), x, return_stats=True)
    coarse, coarse_stats = likelihood.ode_nll(process, mixture.eps_model(process), x, rtol=1e-3, atol=1e-3, return_stats=True)
    assert (fine - exact).abs().max() / 3 < 1e-3
    assert (coarse - exact).abs().max() / 3 < 2e-2  # measured 3.5e-3
    assert coarse_stats["nfe"] < fine_stats["nfe"]


def test_hutchinson_agrees_within_its_standard_error(mixture):
    """8 Rademacher probes per sample: the batch-mean error must be within 3 standard errors, and the
    per-sample z-scores must look standard (RMS in [0.4, 2]) so that the stderr is calibrated."""
    process = VPSDE()
    x = mixture.sample(16, generator=torch.Generator().manual_seed(1))
    model = mixture.eps_model(process)
    exact = likelihood.ode_nll(process, model, x)
    for probe, tol in (("rademacher", 1e-5), ("gaussian", 1e-4)):
        nll, stats = likelihood.ode_nll(process, model, x, divergence="hutchinson", probes=8, probe=probe, rtol=tol, atol=tol,
                                        generator=torch.Generator().manual_seed(2), return_stats=True)
        se = stats["stderr"]
        assert (se > 0).all()
        z = (nll - exact) / se
        assert (nll - exact).mean().abs() < 3 * se.pow(2).sum().sqrt() / len(x)
        assert 0.4 < z.pow(2).mean().sqrt() < 2.0, z
    one, stats = likelihood.ode_nll(process, model, x[:2], divergence="hutchinson", rtol=1e-3, atol=1e-3,
                                    generator=torch.Generator().manual_seed(3), return_stats=True)
    assert torch.isnan(stats["stderr"]).all() and torch.isfinite(one).all()


def test_hutchinson_is_reproducible_from_the_generator(mixture):
    process, x = VPSDE(), mixture.sample(2, generator=torch.Generator().manual_seed(0))
    model = mixture.eps_model(process)
    run = lambda s: likelihood.ode_nll(process, model, x, "hutchinson", 2, 1e-3, 1e-3, generator=torch.Generator().manual_seed(s))
    assert torch.equal(run(5), run(5)) and not torch.equal(run(5), run(6))


def test_exact_divergence_on_images_matches_the_full_jacobian():
    """Image-shaped x (batch, 1, 3, 3) and d = 9 > chunk: the trace from batched VJPs equals the trace
    of the autograd Jacobian (float64, 1e-10)."""
    torch.manual_seed(0)
    w = torch.randn(9, 9, dtype=torch.float64)

    def f(x):
        h = torch.tanh(x.flatten(1) @ w)
        return (h * x.flatten(1)).reshape(x.shape)

    x = torch.randn(4, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    out = f(x)
    got = exact_divergence(out, x, chunk=4)
    want = torch.stack([torch.autograd.functional.jacobian(lambda z: f(z[None])[0].flatten(), x[i].detach()).reshape(9, 9).trace()
                        for i in range(4)])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_image_shaped_data_and_float32(mixture):
    """A d = 4 mixture fed as (batch, 1, 2, 2) float32 gives the flat float64 answer to float32 accuracy
    (asserted 5e-3 nats/dim at rtol = atol = 1e-5)."""
    gm = GaussianMixture.random(d=4, k=2, seed=3)
    gm = GaussianMixture(gm.weights, gm.means - gm.mean(), gm.covs)
    process = VPSDE()
    x = gm.sample(4, generator=torch.Generator().manual_seed(0))
    flat = likelihood.ode_nll(process, gm.eps_model(process), x)
    img = likelihood.ode_nll(process, gm.eps_model(process), x.float().reshape(4, 1, 2, 2))
    assert img.dtype == torch.float32
    assert (img.double() - flat).abs().max() / 4 < 5e-3


def test_bad_arguments_raise_clear_errors(mixture):
    process, x = VPSDE(), mixture.sample(2)
    model = mixture.eps_model(process)
    with pytest.raises(ValueError, match="divergence"):
        likelihood.ode_nll(process, model, x, divergence="trace")
    with pytest.raises(ValueError, match="probe"):
        likelihood.ode_nll(process, model, x, divergence="hutchinson", probe="uniform")
    with pytest.raises(ValueError, match="probes"):
        likelihood.ode_nll(process, model, x, divergence="hutchinson", probes=0)
    with pytest.raises(ValueError, match="dequantize"):
        likelihood.ode_nll(process, model, torch.zeros(2, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="t_start"):
        likelihood.ode_nll(process, model, x, t_start=2.0)
