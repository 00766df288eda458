"""The README's "Adding a sampler, a process or a model", proven: a process and a sampler defined in this file, with
no edit to the package, run through ``sample()``, the code path of ``sample.py`` (sampler config -> SamplerSpec ->
generate -> sample files) and the sweep, and are checked against the exact Gaussian mixture."""
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
from diffusion.samplers import SAMPLERS, register_sampler, runs_on, sampler_from_config, sampler_options
from diffusion.samplers.common import alpha_sigma, eps_and_x0, grid
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


GM = GaussianMixture.random(2, k=2, scale=(0.2, 0.4), seed=3)


@pytest.fixture(autouse=True, scope="module")
def registered():
    """Register the sampler as its module would at import, and remove it afterwards: other tests iterate over
    every registered sampler and expect a config file for each."""
    register_sampler("ddim_test")(ddim_test)
    yield
    SAMPLERS.pop("ddim_test")


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
