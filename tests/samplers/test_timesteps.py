"""``timesteps=`` on every sampler: explicit times equal to steps/spacing give the same samples; schedule files
(read by ``diffusion.fitting``, a layer up); bad grids are one-line errors."""
from __future__ import annotations

import pytest
import torch

from diffusion import processes
from diffusion.fitting import load_timesteps, resolve_sampler, save_timesteps
from diffusion.samplers import SAMPLERS, SamplerSpec, runs_on, sample
from diffusion.samplers.registry import grid_size

OPTIONS = {"ode": dict(method="rk4"), "pc": {}}  # a fixed-grid ODE method walks the grid


@pytest.mark.parametrize("process", [processes.VPSDE(), processes.DDPM("linear", 1000), processes.VESDE()], ids=repr)
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_timesteps_equal_steps_and_spacing(gm, process, name):
    if not runs_on(name, process):
        pytest.skip("ddpm runs on DDPM only")
    steps, spacing = 6, "karras" if name != "ode" else "uniform"
    times = process.timesteps(grid_size(name, steps), spacing)
    model = gm.eps_model(process)
    x_T = process.prior_sample((32, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    opts = OPTIONS.get(name, {})
    a = sample(process, model, None, name, steps, torch.Generator().manual_seed(1), x_T=x_T, spacing=spacing, **opts)
    b = sample(process, model, None, name, 999, torch.Generator().manual_seed(1), x_T=x_T, timesteps=times, **opts)
    assert torch.equal(a, b)


def test_timesteps_from_a_schedule_file(gm, tmp_path):
    process = processes.VPSDE()
    times = [1.0, 0.5, 0.2, 0.05, 0.001]
    path = save_timesteps(tmp_path / "ipndm_4.json", times, sampler="ipndm", steps=4)
    assert load_timesteps(path) == times
    model = gm.eps_model(process)
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = sample(process, model, None, "ipndm", x_T=x_T, timesteps=times)
    b = resolve_sampler(SamplerSpec("ipndm", timesteps=str(path)), process, fit=False)(process, model, None, x_T=x_T)
    assert torch.equal(a, b)


@pytest.mark.parametrize("times,match", [([1.0, 0.5, 0.7, 0.001], "strictly decreasing"),
                                         ([2.0, 0.5, 0.001], "must lie in"), ([], "empty"),
                                         ([1.0, float("nan"), 0.001], "finite"), ([1.0], "at least 2")])
def test_bad_timesteps_are_clear_errors(times, match):
    with pytest.raises(ValueError, match=match):
        sample(processes.VPSDE(), lambda x, t: x, None, "dpmpp_2m", x_T=torch.zeros(2, 2), timesteps=times)


def test_missing_or_bad_schedule_file(tmp_path):
    with pytest.raises(ValueError, match="no schedule file.*task=schedule"):
        resolve_sampler(SamplerSpec("ddim", timesteps=str(tmp_path / "x")), processes.VPSDE(), fit=False)
    (tmp_path / "bad.json").write_text('{"timesteps": "soon"}')
    with pytest.raises(ValueError, match="no list of numbers"):
        resolve_sampler(SamplerSpec("ddim", timesteps=str(tmp_path / "bad.json")), processes.VPSDE(), fit=False)
    # a file's times outside the process's are caught when it is resolved, before any model runs
    (tmp_path / "wide.json").write_text('{"timesteps": [2.0, 0.5, 0.001]}')
    with pytest.raises(ValueError, match="must lie in"):
        resolve_sampler(SamplerSpec("ddim", timesteps=str(tmp_path / "wide.json")), processes.VPSDE(), fit=False)
    # a sampler takes times, not files: a path that reaches it unresolved says where to resolve it
    with pytest.raises(ValueError, match="diffusion.fitting.resolve_sampler"):
        sample(processes.VPSDE(), lambda x, t: x, None, "ddim", x_T=torch.zeros(2, 2), timesteps=str(tmp_path / "x"))
