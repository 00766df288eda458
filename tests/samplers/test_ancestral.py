"""DDPM and DDIM: the target distribution, DDIM(eta=1) == DDPM, and one step == diffusers' schedulers."""
from __future__ import annotations

import pytest
import torch

from diffusion import processes
from diffusion.samplers import CountingModel, ddim_step, ddpm_step, sample

from .helpers import N_SAMPLES, all_processes


def _draw(process, model, sampler, steps, seed=0, n=N_SAMPLES, **options):
    return sample(process, model, (n, 2), sampler=sampler, steps=steps,
                  generator=torch.Generator().manual_seed(seed), **options)


def test_ddpm_reproduces_target(gm, target):
    process = processes.DDPM("linear", 1000)
    model = CountingModel(gm.eps_model(process))
    x = _draw(process, model, "ddpm", steps=1000)
    assert model.nfe == 1000
    target.check(x, "ddpm, all 1000 steps")


@pytest.mark.parametrize("process", all_processes(), ids=repr)
def test_ddim_reproduces_target(gm, target, process):
    # 250 steps: the deterministic first-order solver is then within 0.04 nats of the target on every process
    target.check(_draw(process, gm.eps_model(process), "ddim", steps=250), f"ddim eta=0 on {process!r}")


def test_ddim_stochastic_reproduces_target(gm, target):
    process = processes.VPSDE()
    target.check(_draw(process, gm.eps_model(process), "ddim", steps=250, eta=0.5), "ddim eta=0.5 on VP")


@pytest.mark.parametrize("sampler,steps", [pytest.param("ddpm", 1000, marks=pytest.mark.slow), ("ddim", 250)])
def test_wrong_eps_coefficient_fails_the_target_check(gm, target, sampler, steps):
    """The same check rejects the sampler when eps (equivalently the x0_pred / score coefficient) is 10% off:
    measured logp_gap -0.21 (ddpm), -2.27 (ddim); d^2 0.009 (ddpm), 0.094 (ddim)."""
    process = processes.DDPM("linear", 1000)
    exact = gm.eps_model(process)
    x = _draw(process, lambda x, t: 0.9 * exact(x, t), sampler, steps)
    assert target.fails(x), target.distances(x)


def test_ddim_eta1_all_steps_equals_ddpm(gm):
    """eta = 1 on the full chain is the DDPM step with beta_tilde (module docstring): equal up to float64 rounding,
    given the same x_T and the same noise draws (both consume the generator once per non-final step)."""
    process = processes.DDPM("linear", 200)
    model = gm.eps_model(process)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    def run(sampler, seed, **options):
        return sample(process, model, None, sampler, steps=200, x_T=x_T, generator=torch.Generator().manual_seed(seed),
                      **options)

    x_ddpm, x_ddim = run("ddpm", 2), run("ddim", 2, eta=1.0)
    assert (x_ddpm - x_ddim).abs().max() < 1e-12  # measured 1.8e-15
    # and not by accident: another noise stream gives a different sample
    x_other = run("ddim", 3, eta=1.0)
    assert (x_ddpm - x_other).abs().max() > 1e-2


def test_ddpm_beta_variance_is_beta_t():
    """variance='beta' uses sigma_{t|s}^2, which is beta_t itself on the unrespaced chain."""
    process = processes.DDPM("linear", 1000)
    x, eps = torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    noise = torch.ones(1, 1, dtype=torch.float64)
    for t in (1, 500, 999):
        step = ddpm_step(process, x, eps, t, t - 1, "beta", noise)  # mean 0, so the step is sqrt(var) * 1
        assert abs(float(step) ** 2 - float(process.betas[t])) < 1e-15


# ---- diffusers ---------------------------------------------------------------------------------------------


def _float64_scheduler(scheduler, process):
    """Give a diffusers scheduler our float64 schedule, so that both sides compute from the same numbers."""
    scheduler.betas = process.betas.clone()
    scheduler.alphas = 1.0 - scheduler.betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, 0)
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


@pytest.mark.parametrize("variance,variance_type", [("beta_tilde", "fixed_small"), ("beta", "fixed_large")])
def test_ddpm_step_equals_diffusers(gm, variance, variance_type):
    diffusers = pytest.importorskip("diffusers")
    process = processes.DDPM("linear", 1000)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                                        variance_type=variance_type)
    scheduler.set_timesteps(50)  # respaced: "leading" timesteps 980, 960, ..., 0
    _float64_scheduler(scheduler, process)
    model = gm.eps_model(process)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    timesteps = scheduler.timesteps.tolist()
    worst = 0.0
    for i, t in enumerate(timesteps):
        s = timesteps[i + 1] if i + 1 < len(timesteps) else None
        eps = model(x, torch.full((16,), float(t), dtype=torch.float64))
        theirs = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(i)).prev_sample
        noise = None if s is None else torch.randn(x.shape, generator=torch.Generator().manual_seed(i), dtype=x.dtype)
        ours = ddpm_step(process, x, eps, t, s, variance, noise)
        worst = max(worst, float((ours - theirs).abs().max() / theirs.abs().max()))
        x = theirs
    assert worst < 1e-12, worst  # measured 4e-15: float64 rounding of the same numbers in another order


def test_ddpm_chain_equals_diffusers(gm):
    """The whole 1000-step chain from the same x_T and generator: same noise draws, same samples."""
    diffusers = pytest.importorskip("diffusers")
    process = processes.DDPM("linear", 1000)
    scheduler = _float64_scheduler(diffusers.DDPMScheduler(num_train_timesteps=1000, clip_sample=False), process)
    model = gm.eps_model(process)
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x = x_T
    for t in scheduler.timesteps.tolist():
        x = scheduler.step(model(x, torch.full((8,), float(t), dtype=torch.float64)), t, x, generator=g).prev_sample
    ours = sample(process, model, None, "ddpm", steps=1000, x_T=x_T, generator=torch.Generator().manual_seed(1))
    assert (ours - x).abs().max() < 1e-11  # measured 7.8e-13 after 1000 steps


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_equals_diffusers(gm, eta):
    diffusers = pytest.importorskip("diffusers")
    process = processes.DDPM("linear", 1000)
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=True)
    scheduler.set_timesteps(50)  # t -> t - 20; the last step from t = 0 goes to the clean data
    _float64_scheduler(scheduler, process)
    model = gm.eps_model(process)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    worst = 0.0
    for i, t in enumerate(scheduler.timesteps.tolist()):
        s = t - 20 if t >= 20 else None
        eps = model(x, torch.full((16,), float(t), dtype=torch.float64))
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(i), dtype=x.dtype)
        theirs = scheduler.step(eps, t, x, eta=eta, variance_noise=noise if eta > 0 else None).prev_sample
        ours = ddim_step(process, x, eps, t, s, eta, noise)
        worst = max(worst, float((ours - theirs).abs().max() / theirs.abs().max()))
        x = theirs
    assert worst < 1e-12, worst  # measured 7e-16 (eta 0), 3e-15 (eta 1)


@pytest.mark.parametrize("scheduler_name", ["DDPMScheduler", "DDIMScheduler"])
def test_steps_match_diffusers_own_float32_schedule(gm, scheduler_name):
    """Untouched diffusers (float32 betas and cumprod) against our float64 coefficients on a float32 state: equal to
    2e-5 relative (measured 3.5e-6 DDPM, 6e-7 DDIM: the float32 cumprod over up to 1000 betas)."""
    diffusers = pytest.importorskip("diffusers")
    process = processes.DDPM("linear", 1000)
    scheduler = getattr(diffusers, scheduler_name)(num_train_timesteps=1000, clip_sample=False)
    scheduler.set_timesteps(50)
    model = gm.eps_model(process)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    timesteps = scheduler.timesteps.tolist()
    worst = 0.0
    for i, t in enumerate(timesteps):
        s = timesteps[i + 1] if i + 1 < len(timesteps) else None
        eps = model(x, torch.full((16,), float(t), dtype=torch.float64))
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(i))
        if scheduler_name == "DDPMScheduler":
            theirs = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(i)).prev_sample
            ours = ddpm_step(process, x, eps, t, s, "beta_tilde", None if s is None else noise)
        else:
            theirs = scheduler.step(eps, t, x, eta=1.0, variance_noise=noise).prev_sample
            ours = ddim_step(process, x, eps, t, s, 1.0, noise)
        worst = max(worst, float((ours - theirs).abs().max() / theirs.abs().max()))
        x = theirs
    assert worst < 2e-5, worst
