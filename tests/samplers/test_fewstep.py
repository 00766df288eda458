"""The few-step solvers (unipc, dpmpp_3m, ipndm, dpmpp_2m_sde): the target, the order of accuracy, and step-by-step
agreement with diffusers' schedulers on the same float64 schedule."""
from __future__ import annotations

import importlib

import pytest
import torch

from diffusion import processes
from diffusion.samplers import CountingModel, common, sample
from diffusion.samplers.ode import decode

from .helpers import N_SAMPLES, all_processes

dpmpp_3m_module = importlib.import_module("diffusion.samplers.dpmpp_3m")  # the package exports the function
NEW = ("unipc", "dpmpp_3m", "ipndm", "dpmpp_2m_sde")


@pytest.mark.parametrize("process", all_processes(), ids=repr)
@pytest.mark.parametrize("name,steps", [("unipc", 40), ("dpmpp_3m", 40), ("ipndm", 40), ("dpmpp_2m_sde", 80)])
def test_reproduces_target(gm, target, process, name, steps):
    """NFE == steps and the samples pass the target check (FD, log-density gap, weights: ``helpers.Target``)."""
    model = CountingModel(gm.eps_model(process))
    x = sample(process, model, (N_SAMPLES, 2), name, steps=steps, generator=torch.Generator().manual_seed(0))
    assert model.nfe == steps
    target.check(x, f"{name} on {process!r}")


def _errors(gm, process, name, steps_list, **options):
    """Mean distance to the exact flow's x at t_min from the same x_T (dopri5 at rtol 1e-10: ~1e-9 off)."""
    model = gm.eps_model(process)
    x_T = process.prior_std() * torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = decode(process, model, x_T, rtol=1e-10, atol=1e-10)
    options = {"spacing": "logsnr", **options}
    return [float((sample(process, model, None, name, n, x_T=x_T, **options) - exact).norm(dim=1).mean())
            for n in steps_list]


@pytest.mark.slow
@pytest.mark.parametrize("process", [processes.VPSDE(), processes.VESDE()], ids=repr)
@pytest.mark.parametrize("name,options,order", [
    ("dpmpp_3m", {}, 3),
    ("unipc", dict(order=1, corrector=False), 1),  # UniP-1 = DDIM
    ("unipc", dict(order=1), 2),                   # UniC raises the order by one, at no extra call
    ("unipc", dict(order=2, variant="bh1"), 3),
    ("unipc", dict(order=2, variant="bh2"), 3),
    ("unipc", dict(order=3, corrector=False), 3),
    ("unipc", dict(order=3), 4),
    ("ipndm", dict(variable_step=True, order=2), 2),
    ("ipndm", dict(variable_step=True, order=3), 3),
])
def test_order_of_accuracy(gm, process, name, options, order):
    """Doubling the steps (50 -> 100 -> 200, logsnr grid) divides the error by ~2^order. Measured on VP: dpmpp_3m
    7.4, 8.1; UniP-1 2.1, 2.0; UniPC-1 3.4, 3.7; UniPC-2 6.6 (bh1), 6.3 (bh2), 7.6, 7.4; UniP-3 7.4, 8.1; UniPC-3
    12, 18; iPNDM(variable, 2) 3.6, 3.7; (3) 5.7, 6.7. Bounds: above 2^(order - 0.6), below 2^(order + 0.5)."""
    errors = _errors(gm, process, name, (50, 100, 200), **options)
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert 2 ** (order - 0.6) < ratios[1] < 2 ** (order + 0.5), (errors, ratios)
    assert ratios[0] > 2 ** (order - 1.2), (errors, ratios)


def test_peers_third_order_formula_is_second_order(gm, monkeypatch):
    """The authors' and diffusers' 3M weight the D2 = h^2 D''/2 term by phi_3 instead of the Taylor 2 phi_3
    (``dpmpp_3m.py``): it converges at second order (measured ratio 4.5), ours at third (8.1)."""
    process = processes.VPSDE()
    ours = _errors(gm, process, "dpmpp_3m", (100, 200))
    monkeypatch.setattr(dpmpp_3m_module, "D2_COEF", 1.0)
    peers = _errors(gm, process, "dpmpp_3m", (100, 200))
    assert ours[0] / ours[1] > 7 and peers[0] / peers[1] < 5, (ours, peers)


def test_ipndm_uniform_coefficients_converge(gm):
    """The papers' iPNDM (fixed Adams-Bashforth weights) converges, at second order on an uneven grid (measured
    ratios 4.6, 4.3 for order 4 on logsnr)."""
    errors = _errors(gm, processes.VPSDE(), "ipndm", (50, 100, 200))
    assert errors[2] < 1e-4 and errors[0] / errors[1] > 3.5 and errors[1] / errors[2] > 3.5, errors


# ---- diffusers ---------------------------------------------------------------------------------------------
def _diffusers_chain(scheduler, process, model, x_T, steps, noises=None):
    """Run a diffusers multistep scheduler (float64 alphas_cumprod from our process, final sigma at t = 0: the
    solvers' layout) and return its x and the times it walked, ending at 0."""
    scheduler.betas = process.betas.clone()
    scheduler.alphas = 1.0 - scheduler.betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, 0)
    scheduler.set_timesteps(steps)
    x = x_T
    for i, t in enumerate(scheduler.timesteps.tolist()):
        eps = model(x, torch.full((x.shape[0],), float(t), dtype=torch.float64))
        kwargs = {} if noises is None else {"variance_noise": noises[i]}
        x = scheduler.step(eps, t, x, **kwargs).prev_sample
    return x, [float(t) for t in scheduler.timesteps.tolist()] + [0.0]


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_equals_diffusers(gm, order, variant):
    diffusers = pytest.importorskip("diffusers")
    process = processes.DDPM("linear", 1000)
    model = gm.eps_model(process)
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scheduler = diffusers.UniPCMultistepScheduler(num_train_timesteps=1000, solver_order=order, solver_type=variant,
                                                  final_sigmas_type="sigma_min")
    theirs, times = _diffusers_chain(scheduler, process, model, x_T, 8)  # < 10 steps: both lower the final order
    ours = sample(process, model, None, "unipc", x_T=x_T, timesteps=times, order=order, variant=variant)
    assert float((ours - theirs).abs().max() / theirs.abs().max()) < 1e-5  # measured ~1e-7: float32 sigmas there


def test_dpmpp_3m_equals_diffusers_with_their_weight(gm, monkeypatch):
    diffusers = pytest.importorskip("diffusers")
    monkeypatch.setattr(dpmpp_3m_module, "D2_COEF", 1.0)  # diffusers' weight of the D2 term (see the module)
    monkeypatch.setattr(common, "MAX_THIRD_ORDER_RATIO", float("inf"))  # diffusers stays third order after jumps
    process = processes.DDPM("linear", 1000)
    model = gm.eps_model(process)
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for steps in (8, 20):  # with and without the lower-order final steps
        scheduler = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, solver_order=3,
                                                          algorithm_type="dpmsolver++", final_sigmas_type="sigma_min")
        theirs, times = _diffusers_chain(scheduler, process, model, x_T, steps)
        ours = sample(process, model, None, "dpmpp_3m", x_T=x_T, timesteps=times)
        assert float((ours - theirs).abs().max() / theirs.abs().max()) < 1e-5, steps


@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
def test_dpmpp_2m_sde_equals_diffusers(gm, solver_type):
    """Same noise draws (ours from the generator, in step order; theirs passed as variance_noise)."""
    diffusers = pytest.importorskip("diffusers")
    process = processes.DDPM("linear", 1000)
    model = gm.eps_model(process)
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    noises = [torch.randn(x_T.shape, generator=g, dtype=torch.float64) for _ in range(20)]
    scheduler = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, solver_order=2, solver_type=solver_type,
                                                      algorithm_type="sde-dpmsolver++", final_sigmas_type="sigma_min")
    theirs, times = _diffusers_chain(scheduler, process, model, x_T, 20, noises)  # >= 15: no lower-order final
    ours = sample(process, model, None, "dpmpp_2m_sde", x_T=x_T, timesteps=times, solver_type=solver_type,
                  generator=torch.Generator().manual_seed(1))
    assert float((ours - theirs).abs().max() / theirs.abs().max()) < 1e-5


@pytest.mark.parametrize("name", NEW)
def test_bad_options_are_clear_errors(name):
    process, x = processes.VPSDE(), torch.zeros(2, 2)
    bad = {"unipc": dict(order=4), "dpmpp_3m": dict(spacing="cubic"), "ipndm": dict(order=5),
           "dpmpp_2m_sde": dict(solver_type="rk4")}[name]
    with pytest.raises(ValueError, match="order|spacing|solver_type"):
        sample(process, lambda x, t: x, None, name, 5, x_T=x, **bad)
