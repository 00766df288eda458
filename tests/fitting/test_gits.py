"""GITS ``optimize_timesteps``: a valid grid of the right layout that beats the fixed grids on a mixture."""
from __future__ import annotations

import pytest
import torch

from diffusion import processes
from diffusion.fitting import optimize_timesteps
from diffusion.samplers import CountingModel, sample
from diffusion.toy import GaussianMixture


@pytest.mark.parametrize("name,layout", [("ipndm", 6), ("ddim", 5)])
def test_grid_is_valid(gm, name, layout):
    process = processes.VPSDE()
    model = CountingModel(gm.eps_model(process))
    ts = optimize_timesteps(process, model, (1, 2), 5, sampler=name, generator=torch.Generator().manual_seed(0),
                            n=64, fine_steps=40)
    assert len(ts) == layout and ts[0] == process.t_max  # multistep: steps + 1 times; ddim: steps
    assert all(b < a for a, b in zip(ts, ts[1:])) and ts[-1] >= process.t_min
    if name == "ipndm":
        assert ts[-1] == process.t_min
    assert model.nfe == 40 + (name == "ddim")  # the fine reference (+ one denoising call), nothing else


@pytest.mark.slow
@pytest.mark.parametrize("process", [processes.VPSDE(), processes.DDPM("linear", 1000), processes.VESDE()], ids=repr)
@pytest.mark.parametrize("name", ["ipndm", "ddim"])
def test_beats_fixed_grids(process, name):
    """At 5 NFE on a narrow 8-D mixture (1000 samples), the mean distance to the converged solution from the same
    x_T is below the best of the logsnr, uniform and karras grids. Fitted on other draws (n = 256) than scored."""
    gm = GaussianMixture.random(8, k=4, scale=(0.02, 0.1), seed=3)
    model = gm.eps_model(process)
    x_T = process.prior_sample((1000, 8), torch.Generator().manual_seed(0), dtype=torch.float64)
    reference = sample(process, model, None, "dpmpp_3m", 300, x_T=x_T)
    ts = optimize_timesteps(process, model, (1, 8), 5, sampler=name, generator=torch.Generator().manual_seed(1),
                            dtype=torch.float64)

    def error(**grid):
        return float((sample(process, model, None, name, 5, x_T=x_T, **grid) - reference).norm(dim=1).mean())

    fixed = {sp: error(spacing=sp) for sp in ("logsnr", "uniform", "karras")}
    assert error(timesteps=ts) < min(fixed.values()), (error(timesteps=ts), fixed)


def test_bad_requests():
    process = processes.VPSDE()
    with pytest.raises(ValueError, match="unknown sampler"):
        optimize_timesteps(process, lambda x, t: x, (1, 2), 5, sampler="lms")
    with pytest.raises(ValueError, match="steps must be an integer"):
        optimize_timesteps(process, lambda x, t: x, (1, 2), 200, fine_steps=100)
    for n in (0, -4):  # every fit goes through here (sample.py's schedule.n too): one line, not a tensor error
        with pytest.raises(ValueError, match=f"n={n} must be a positive number of fitting draws"):
            optimize_timesteps(process, lambda x, t: x, (1, 2), 5, n=n)


@pytest.mark.slow
def test_refine_lowers_the_error_on_new_draws():
    """refine (coordinate descent on UniPC's own end error over the 256 fitting draws) also lowers it on 1000 other
    draws, at 5 NFE on a wide 16-D mixture (measured 0.76 -> 0.46 for UniPC-3; the DDPM process)."""
    gm = GaussianMixture.random(16, k=8, scale=(0.1, 0.5), seed=1)
    process = processes.DDPM("linear", 1000)
    model = gm.eps_model(process)
    x_T = process.prior_sample((1000, 16), torch.Generator().manual_seed(0))
    reference = sample(process, model, None, "dpmpp_3m", 200, x_T=x_T)
    errors = []
    for refine in (0, 4):
        ts = optimize_timesteps(process, model, (1, 16), 5, sampler="unipc", refine=refine,
                                generator=torch.Generator().manual_seed(1))
        errors.append(float((sample(process, model, None, "unipc", x_T=x_T, timesteps=ts) - reference)
                            .norm(dim=1).mean()))
    assert errors[1] < 0.8 * errors[0], errors


def test_refine_travels_far_in_few_sweeps():
    """The refinement's strides double while the error falls: on a separable error whose optimum lies 40 fine
    indices from the start, 4 sweeps reach it exactly (single-index moves would have needed 40) in few runs."""
    from diffusion.fitting.gits import _refine

    target = [0, 15, 60, 100]
    runs = []

    def error(path):
        runs.append(path)
        return float(sum(abs(a - b) for a, b in zip(path, target)))

    assert _refine([0, 10, 20, 100], 4, error) == target
    assert len(runs) < 50, len(runs)
    runs.clear()
    assert _refine([0, 10, 20, 100], 1, error) != target  # one sweep is not enough: the count of sweeps is honoured


def test_edm_grid_is_not_drawn_to_high_noise():
    """On EDM (x grows to sigma_max = 80) the step costs are measured in VP's scale x / sqrt(1 + sigma^2): unscaled,
    the 10-step grid on a narrow 64-D mixture spent every inner time above sigma = 1.7 and then jumped to 0.002 in
    one step (measured: [80, 27.7, 16.3, ..., 2.69, 1.76, 0.002]). Scaled, the last steps reach the data."""
    gm = GaussianMixture.random(64, k=4, scale=(0.01, 0.1), seed=0)
    process = processes.EDM()
    times = optimize_timesteps(process, gm.eps_model(process), (1, 64), 10, sampler="ipndm",
                               generator=torch.Generator().manual_seed(50))
    assert len(times) == 11 and times[0] == 80.0 and times[-1] == 0.002
    assert sum(t < 1.0 for t in times[1:-1]) >= 2, times
