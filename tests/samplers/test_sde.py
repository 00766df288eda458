"""Euler-Maruyama over the lambda-family of reverse SDEs, and predictor-corrector sampling."""
from __future__ import annotations

import pytest
import torch

from diffusion import processes
from diffusion.samplers import CountingModel, sample

from .helpers import N_SAMPLES, all_processes


def _draw(process, model, sampler, steps, seed=0, n=N_SAMPLES, **options):
    return sample(process, model, (n, 2), sampler=sampler, steps=steps,
                  generator=torch.Generator().manual_seed(seed), **options)


@pytest.mark.parametrize("process", all_processes(), ids=repr)
def test_euler_maruyama_reproduces_target(gm, target, process):
    # 250 steps: measured |logp_gap| <= 0.06, d^2 <= 0.001 on every process
    target.check(_draw(process, gm.eps_model(process), "euler_maruyama", 250), f"euler_maruyama on {process!r}")


@pytest.mark.parametrize("noise_scale", [pytest.param(0.5, marks=pytest.mark.slow), 2.0])
def test_euler_maruyama_other_noise_scales_reproduce_target(gm, target, noise_scale):
    """Every member of the family has the forward marginals (module docstring); lambda = 2 injects 4x the noise."""
    process = processes.VPSDE()
    x = _draw(process, gm.eps_model(process), "euler_maruyama", 250, noise_scale=noise_scale)
    target.check(x, f"euler_maruyama lambda={noise_scale}")


@pytest.mark.parametrize("process", [p if p.name in ("vpsde", "vesde") else pytest.param(p, marks=pytest.mark.slow)
                                     for p in all_processes()], ids=repr)
def test_pc_reproduces_target(gm, target, process):
    # 200 steps x (1 predictor + 1 Langevin corrector), snr 0.16: measured |logp_gap| <= 0.045
    target.check(_draw(process, gm.eps_model(process), "pc", 200), f"pc on {process!r}")


def test_pc_euler_maruyama_predictor_reproduces_target(gm, target):
    process = processes.VPSDE()
    target.check(_draw(process, gm.eps_model(process), "pc", 100, predictor="euler_maruyama"), "pc with EM predictor")


def test_pc_nfe():
    process = processes.VPSDE()
    model = CountingModel(lambda x, t: x)
    sample(process, model, (4, 2), "pc", steps=7, generator=torch.Generator().manual_seed(0), corrector_steps=3)
    assert model.nfe == 7 * (1 + 3)
    model.nfe = 0
    sample(process, model, (4, 2), "euler_maruyama", steps=7, generator=torch.Generator().manual_seed(0))
    assert model.nfe == 7


@pytest.mark.parametrize("sampler,options,scale", [
    # the drift coefficient (1 + lambda^2)/2 of the score replaced by 1/2 while keeping the noise: a missing term
    ("euler_maruyama", {}, 0.5),
    # a 10% error in the score coefficient g^2 (measured logp_gap -0.31 for EM, -0.22 for pc)
    pytest.param("euler_maruyama", {}, 0.9, marks=pytest.mark.slow),
    ("pc", {}, 0.9),
])
def test_wrong_coefficient_fails_the_target_check(gm, target, sampler, options, scale):
    process = processes.VPSDE()
    exact = gm.eps_model(process)
    steps = 250 if sampler == "euler_maruyama" else 200
    x = _draw(process, lambda x, t: scale * exact(x, t), sampler, steps, **options)
    assert target.fails(x), target.distances(x)


def test_euler_maruyama_without_noise_is_the_ode(gm):
    """lambda = 0 is Euler on the probability-flow ODE: it converges to the ODE solution from the same x_T at first
    order (mean per-sample error measured 0.0038 at 200 steps, 0.0019 at 400)."""
    process = processes.VPSDE()
    model = gm.eps_model(process)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = sample(process, model, None, "ode", x_T=x_T, rtol=1e-8, atol=1e-8)
    errors = [float((sample(process, model, None, "euler_maruyama", steps, x_T=x_T, noise_scale=0.0) - exact)
                    .norm(dim=1).mean()) for steps in (200, 400)]
    assert errors[1] < 0.003, errors
    assert 1.7 < errors[0] / errors[1] < 2.3, errors  # first order: the error halves with twice the steps


def test_noise_is_reproducible_from_the_generator(gm):
    process = processes.VESDE()
    model = gm.eps_model(process)
    a, b, c = (_draw(process, model, "pc", 20, seed=s, n=8) for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.allclose(a, c)
