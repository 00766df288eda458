"""The README's "Adding a sampler, a process or a model", proven: a process and a sampler defined in this file, with
no edit to the package, run through ``sample()``, the code path of ``sample.py`` (sampler config -> SamplerSpec ->
generate -> sample files) and the sweep, and are checked against the exact Gaussian mixture. A multistep solver
defined here too, registered with its layout, gets a grid fitted for it by ``diffusion.fitting`` and walks it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from diffusion import sample
from diffusion.buildable import allowed_targets
from diffusion.evaluation.frechet import frechet_distance_to
from diffusion.evaluation.sweep import run_sweep
from diffusion.processes import DDPM, Process
from diffusion.runs import BatchStore, generate
from diffusion.fitting import optimize_timesteps, resolve_sampler
from diffusion.samplers import (SAMPLERS, SOLVER, CountingModel, layout, register_sampler, runs_on,
                                sampler_from_config, sampler_options)
from diffusion.samplers.common import alpha_sigma, eps_and_x0, grid, model_time
from diffusion.samplers.grids import solver_grid
from diffusion.toy import GaussianMixture


class TrigProcess(Process):
    """alpha = cos(pi t / 2), sigma = sin(pi t / 2): f = -pi/2 tan(pi t / 2), g^2 = pi tan(pi t / 2)."""

    name = "trig_test"
    t_max = 0.995

    def log_alpha(self, t):
        return torch.log(torch.cos(math.pi * t.double() / 2))

    def sigma2(self, t):
        return torch.sin(math.pi * t.double() / 2) ** 2

    def f_coef(self, t):
        return -math.pi / 2 * torch.tan(math.pi * t.double() / 2)

    def g2(self, t):
        return math.pi * torch.tan(math.pi * t.double() / 2)


def ddim_test(process, model, x, steps, generator=None, progress=False, *, spacing: str = "uniform"):
    """Deterministic DDIM written out here: x_s = alpha_s x0_pred + sigma_s eps."""
    ts = grid(process, steps, spacing)
    for i, t in enumerate(ts):
        eps, x0 = eps_and_x0(process, model, x, t)
        if i + 1 == len(ts):
            return x0
        alpha_s, sigma_s = alpha_sigma(process, ts[i + 1])
        x = alpha_s * x0 + sigma_s * eps
    return x


def ab2_test(process, model, x, steps, generator=None, progress=False, *, spacing: str = "logsnr",
             timesteps=None):
    """A multistep solver written out: two-step Adams-Bashforth on the eps-form ODE dy/ds = eps(alpha y, t) in
    y = x / alpha, s = sigma / alpha (iPNDM of order 2), y_{i+1} = y_i + (s_{i+1} - s_i) (3 eps_i - eps_{i-1}) / 2.
    The solver layout: steps + 1 times, the model called at all but the last, x returned there."""
    ts = solver_grid(process, steps, spacing, timesteps, "ab2_test")
    alpha, sigma = zip(*(alpha_sigma(process, t) for t in ts))
    s = [b / a for a, b in zip(alpha, sigma)]
    y, previous = x / alpha[0], None
    for i in range(len(ts) - 1):
        eps = model(alpha[i] * y, model_time(ts[i], x)).to(x.dtype)
        slope = eps if previous is None else 1.5 * eps - 0.5 * previous
        y, previous = y + (s[i + 1] - s[i]) * slope, eps
    return alpha[-1] * y


GM = GaussianMixture.random(2, k=2, scale=(0.2, 0.4), seed=3)


@pytest.fixture(autouse=True, scope="module")
def registered():
    """Register the samplers as their module would at import, and remove them afterwards: other tests iterate over
    every registered sampler and expect a config file for each."""
    register_sampler("ddim_test")(ddim_test)
    register_sampler("ab2_test", layout=SOLVER)(ab2_test)
    yield
    SAMPLERS.pop("ddim_test")
    SAMPLERS.pop("ab2_test")


def _fd(x):
    return frechet_distance_to(x.flatten(1), GM.mean(), GM.cov())


def test_the_new_parts_are_registered():
    assert "ddim_test" in SAMPLERS and sampler_options("ddim_test") == {"spacing": "uniform"}
    process = TrigProcess()
    assert runs_on("ddim_test", process) and not runs_on("ddpm", process) and runs_on("ddim_test", DDPM())
    assert f"{TrigProcess.__module__}.TrigProcess" in allowed_targets()  # a checkpoint may name it


def test_sample_api_reaches_the_exact_target():
    process, g = TrigProcess(), torch.Generator().manual_seed(0)
    for name in ("ddim_test", "ddim", "dpmpp_2m"):
        x = sample(process, GM.eps_model(process), (4000, 2), sampler=name, steps=50, generator=g)
        assert _fd(x) < 0.006, name  # the tolerance of tests/samplers/helpers.py (exact draws: ~1e-3)


def test_sample_py_code_path(tmp_path):
    """What sample.py does after loading the run: config -> SamplerSpec -> checked -> generate into a BatchStore."""
    process = TrigProcess()
    spec = sampler_from_config(OmegaConf.create({"_target_": "diffusion.samplers.SamplerSpec", "name": "ddim_test",
                                                 "steps": 30})).check(process)
    store = BatchStore(tmp_path / "out", {"sampler": spec.name}).open()
    model = lambda x, t, **_: GM.eps_model(process)(x.flatten(1), t).reshape(x.shape)  # noqa: E731 - images
    _, _, stats = generate(process, model, 6, (1, 1, 2), sampler=spec, batch_size=3, store=store, clip_denoised=None)
    npz, images, _ = store.gather(2)
    assert stats.nfe == 30 and images.shape == (6, 1, 1, 2) and images.dtype == torch.uint8
    assert np.load(npz)["arr_0"].shape == (6, 1, 2, 1)


def test_sweep():
    process = TrigProcess()
    model = lambda x, t, **_: GM.eps_model(process)(x.flatten(1), t).reshape(x.shape)  # noqa: E731
    rows = run_sweep(process, model, (1, 1, 2), {"ddim_test": {}, "ddim": {"eta": 0.0}}, [2, 8], n=4)
    assert [(r["sampler"], r["steps"], r["nfe"]) for r in rows] == [("ddim_test", 2, 2), ("ddim_test", 8, 8),
                                                                   ("ddim", 2, 2), ("ddim", 8, 8)]


def test_a_new_multistep_solver_gets_a_fitted_grid(tmp_path):
    """Adding a multistep solver is its function with ``layout=SOLVER`` and a config: GITS fits it a grid of its
    layout (steps + 1 times), ``sampler.timesteps=fitted`` resolves to that grid through ``diffusion.fitting`` (fitted
    once into the schedules folder, then reused), and the fitted grid brings the 5-NFE samples closer to the exact
    flow of the same x_T than the solver's own logsnr grid does (measured: 0.048 against 0.137)."""
    process = TrigProcess()
    model = GM.eps_model(process)
    assert layout("ab2_test") == SOLVER
    times = optimize_timesteps(process, model, (1, 2), 5, sampler="ab2_test", n=64, fine_steps=30,
                               generator=torch.Generator().manual_seed(0))
    assert len(times) == 6 and times[0] == pytest.approx(process.t_max) and times[-1] == pytest.approx(process.t_min)
    assert all(b < a for a, b in zip(times, times[1:]))

    node = {"_target_": "diffusion.samplers.SamplerSpec", "name": "ab2_test", "steps": 5, "timesteps": "fitted"}
    configured = sampler_from_config(OmegaConf.create(node)).check(process)  # as configs/sampler/ab2_test.yaml would
    fit = dict(schedules_dir=tmp_path, n=64, fine_steps=30, refine=0)
    spec = resolve_sampler(configured, process, model, (2,), **fit)
    assert spec.sources == {"timesteps": str(tmp_path / "ab2_test_5.json")} and spec.label == "ab2_test_5_fitted"
    assert len(spec.options["timesteps"]) == 6
    stamp = (tmp_path / "ab2_test_5.json").stat().st_mtime_ns
    assert resolve_sampler(configured, process, model, (2,), **fit) == spec  # reused, not refitted
    assert (tmp_path / "ab2_test_5.json").stat().st_mtime_ns == stamp

    x_T = process.prior_sample((2000, 2), torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = sample(process, model, None, "dpmpp_3m", 200, x_T=x_T)
    counter = CountingModel(model)
    fitted = spec(process, counter, None, x_T=x_T)
    fixed = sampler_from_config(OmegaConf.create({**node, "timesteps": None}))(process, model, None, x_T=x_T)
    assert counter.nfe == 5
    error_fitted, error_fixed = (float((x - exact).norm(dim=1).mean()) for x in (fitted, fixed))
    assert error_fitted < 0.7 * error_fixed, (error_fitted, error_fixed)
