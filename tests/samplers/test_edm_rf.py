"""Every sampler on EDM and rectified flow reproduces the exact 2-D mixture (tolerances in ``helpers.py``), heun
converges to the adaptive ODE, and rectified flow's DDIM step is the flow ODE's Euler step."""
from __future__ import annotations

import pytest
import torch

from diffusion import processes
from diffusion.samplers import SAMPLERS, CountingModel, runs_on, ddim_step, heun, ode, sample
from diffusion.samplers.ode import probability_flow_drift

from .helpers import N_SAMPLES

PROCS = {"edm": processes.EDM(), "rf": processes.RectifiedFlow()}

# (sampler, steps, options) on the process's default grid (karras for EDM, uniform for RF) unless stated.
# Steps are where the sampler's own error is below the tolerances on this narrow (std 0.1-0.3) mixture:
# heun at EDM's 18 steps is off in E[log p] by 0.12 nats (FD 0.0014), at 32 steps by 0.04.
FAST = [
    ("heun", 32, {}),
    ("ddim", 100, {}),
    ("dpmpp_2m", 20, {}),
]
SLOW = [
    ("heun", 64, {"S_churn": 10.0}),
    ("heun", 64, {"S_churn": 40.0, "S_tmin": 0.05, "S_tmax": 50.0}),
    ("ddim", 200, {"eta": 1.0}),
    ("euler_maruyama", 200, {}),
    ("euler_maruyama", 200, {"noise_scale": 0.5}),
    ("pc", 200, {}),
    ("ode", 1, {}),
    ("ode", 100, {"method": "rk4"}),
    ("dpmpp_3m", 40, {}),
    ("unipc", 40, {}),
    ("ipndm", 40, {}),
    ("dpmpp_2m_sde", 100, {}),
]


def _run(process, gm, sampler, steps, options, seed=0, scale=1.0):
    exact = gm.eps_model(process)
    model = CountingModel(exact if scale == 1.0 else (lambda x, t: scale * exact(x, t)))
    x = sample(process, model, (N_SAMPLES, 2), sampler, steps, torch.Generator().manual_seed(seed), **options)
    return x, model.nfe


def _check(name, target, gm, sampler, steps, options):
    process = PROCS[name]
    assert runs_on(sampler, process)
    x, nfe = _run(process, gm, sampler, steps, options)
    target.check(x, f"{name} {sampler} {steps} {options}")
    expected = {"heun": 2 * steps - 1, "pc": 2 * steps, "ode": nfe}.get(sampler, steps)
    assert nfe == expected, (sampler, nfe)


@pytest.mark.parametrize("name", list(PROCS))
@pytest.mark.parametrize("sampler,steps,options", FAST, ids=[f"{s}-{n}" for s, n, _ in FAST])
def test_sampler_reproduces_the_target(name, target, gm, sampler, steps, options):
    _check(name, target, gm, sampler, steps, options)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PROCS))
@pytest.mark.parametrize("sampler,steps,options", SLOW, ids=[f"{s}-{n}-{i}" for i, (s, n, _) in enumerate(SLOW)])
def test_sampler_reproduces_the_target_slow(name, target, gm, sampler, steps, options):
    _check(name, target, gm, sampler, steps, options)


#: samplers that are exact only for another kind of model than a diffusion model's eps, and where that is checked
TESTED_ELSEWHERE = {"consistency": "a consistency model's f: tests/distillation/test_consistency.py, where the exact "
                                   "consistency function of Gaussian data draws the data in one and two steps"}


def test_every_sampler_is_covered():
    """Every registered sampler except DDPM's own runs on both processes and appears above (or is checked against the
    closed form of the model it is made for, ``TESTED_ELSEWHERE``)."""
    covered = {s for s, _, _ in FAST + SLOW} | set(TESTED_ELSEWHERE)
    for sampler in SAMPLERS:
        runs = all(runs_on(sampler, process) for process in PROCS.values())
        assert runs == (sampler != "ddpm") and (sampler in covered) == runs, sampler


@pytest.mark.parametrize("name", list(PROCS))
def test_a_wrong_model_fails_the_check(name, target, gm):
    """The tolerances can fail: eps 10% too large is caught for heun and ddim."""
    for sampler, steps in (("heun", 32), ("ddim", 100)):
        x, _ = _run(PROCS[name], gm, sampler, steps, {}, scale=1.1)
        assert target.fails(x), (name, sampler, target.distances(x))


def test_ddpm_sampler_names_the_alternatives():
    for process in PROCS.values():
        with pytest.raises(ValueError) as excinfo:
            sample(process, lambda x, t: x, (2, 2), sampler="ddpm", steps=10)
        message = str(excinfo.value)
        assert "\n" not in message and "ddim" in message and "euler_maruyama" in message


@pytest.mark.parametrize("name", list(PROCS))
def test_heun_with_many_steps_matches_the_adaptive_ode(name, gm):
    """Same x_T: heun vs dopri5 at rtol = atol = 1e-7 (itself 1e-7 from a 1e-9 solve), both ending with the
    denoising step. Mean distance, measured against the 1e-9 solve at 64/128/256/512 steps: EDM 5.3e-3, 5.4e-4,
    1.3e-4, 3.4e-5; RF 1.2e-2, 4.3e-3, 1.9e-4, 4.0e-5 (second order once the grid resolves the mixture: 4x per
    doubling). Asserted below 5e-4 at 256 steps and a >2.5x fall from 64 to 256."""
    process = PROCS[name]
    model = gm.eps_model(process)
    x_T = process.prior_sample((256, 2), torch.Generator().manual_seed(3), dtype=torch.float64)
    reference = ode(process, model, x_T, 1, rtol=1e-7, atol=1e-7)
    err = {n: float((heun(process, model, x_T, n) - reference).norm(dim=1).mean()) for n in (64, 256)}
    assert err[256] < 5e-4 and err[64] / err[256] > 2.5, err


def test_rectified_flow_ddim_step_is_the_flow_euler_step(gm):
    """x_s = (1 - s) x0_pred + s eps (DDIM, eta = 0) equals x_t + (s - t) v with v = eps - x0_pred, the flow
    velocity, and equals x_t + (s - t) dx/dt of the probability-flow ODE (float64, 1e-12); whole runs of ddim and
    the ODE sampler with torchdiffeq's Euler on the same grid agree too."""
    process = PROCS["rf"]
    model = gm.eps_model(process)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t, s in ((0.999, 0.9), (0.6, 0.35), (0.1, 0.002)):
        eps = model(x, torch.full((64,), t, dtype=torch.float64))
        x0_pred = (x - t * eps) / (1 - t)
        step = ddim_step(process, x, eps, t, s)
        torch.testing.assert_close(step, x + (s - t) * (eps - x0_pred), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(step, x + (s - t) * probability_flow_drift(process, model, x, t), rtol=1e-12, atol=1e-12)
    x_T = process.prior_sample((64, 2), torch.Generator().manual_seed(1), dtype=torch.float64)
    by_ddim = sample(process, model, None, "ddim", 20, x_T=x_T)
    by_euler = sample(process, model, None, "ode", 20, x_T=x_T, method="euler")
    torch.testing.assert_close(by_ddim, by_euler, rtol=1e-10, atol=1e-10)


def test_heun_is_deterministic_without_churn_and_seeded_with_it(gm):
    process = PROCS["edm"]
    model = gm.eps_model(process)
    x_T = process.prior_sample((16, 2), torch.Generator().manual_seed(0))
    a = heun(process, model, x_T, 8, torch.Generator().manual_seed(1))
    b = heun(process, model, x_T, 8, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = heun(process, model, x_T, 8, torch.Generator().manual_seed(1), S_churn=20.0)
    d = heun(process, model, x_T, 8, torch.Generator().manual_seed(1), S_churn=20.0)
    assert torch.equal(c, d) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="S_churn"):
        heun(process, model, x_T, 8, S_churn=-1.0)


def _edm_algorithm_2(eps_model, x, sigmas, generator, S_churn, S_tmin, S_tmax, S_noise):
    """Karras et al. 2022, algorithm 2, written from the paper (alpha = 1, t = sigma, d = (x - D)/sigma = eps)."""
    import math

    sigmas = list(sigmas) + [0.0]
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        gamma = min(S_churn / n, math.sqrt(2) - 1) if S_tmin <= sigma <= S_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * S_noise * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        d = eps_model(x, torch.full((len(x),), sigma_hat, dtype=torch.float64))
        x_next = x + (sigma_next - sigma_hat) * d
        if sigma_next != 0:
            d_next = eps_model(x_next, torch.full((len(x),), sigma_next, dtype=torch.float64))
            x_next = x + (sigma_next - sigma_hat) * (d + d_next) / 2
        x = x_next
    return x


@pytest.mark.parametrize("options", [{}, {"S_churn": 40.0, "S_tmin": 0.05, "S_tmax": 50.0, "S_noise": 1.003}])
def test_heun_on_edm_is_algorithm_2(gm, options):
    """On EDM with its Karras grid, heun is the paper's algorithm 2 step for step, noise draw for noise draw
    (float64, 1e-10)."""
    process = PROCS["edm"]
    model = gm.eps_model(process)
    x_T = process.prior_sample((32, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    full = {"S_churn": 0.0, "S_tmin": 0.0, "S_tmax": float("inf"), "S_noise": 1.0, **options}
    want = _edm_algorithm_2(model, x_T, process.timesteps(12).tolist(), torch.Generator().manual_seed(5), **full)
    got = heun(process, model, x_T, 12, torch.Generator().manual_seed(5), **options)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
