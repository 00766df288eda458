r"""Multistep consistency sampling (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", algorithm 1).

A consistency model maps any x_t straight to the end of its ODE trajectory, f(x_t, t) = x_{t_min}, which the eps
interface hands over as x0_pred. One step is that map at t_max. Each further step re-noises the estimate to the
next time tau_i with fresh noise (a draw of q(x_tau | x0_pred)) and maps it again:

    x0_pred <- f(x_{t_max}, t_max);   for tau_1 > tau_2 > ...:  x0_pred <- f(alpha_tau x0_pred + sigma_tau z, tau).

Layout as the multistep solvers (``register_sampler(layout=SOLVER)``): ``steps + 1`` times, f evaluated at all but
the last, t_min, where f(x, t_min) = x would add nothing; the walk returns its state there, x0_pred re-noised to
t_min (sigma(t_min) ~ 0.01, as every solver of this layout returns x at t_min), so that a walk over a piece of the
grid (RePaint's segments) ends in the state the whole walk has there. NFE == steps; ``steps=1`` is the one-step
map. Through the eps interface f is any model's x0_pred, so this runs
every model; it is meant for a distilled consistency student (``diffusion.distillation``), where 1-4 steps suffice.
"""
from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import trange

from diffusion.processes.base import Process
from diffusion.samplers.common import EpsFn, alpha_sigma, eps_and_x0, noise_like
from diffusion.samplers.grids import Timesteps, solver_grid
from diffusion.samplers.registry import SOLVER, register_sampler


@register_sampler(layout=SOLVER)
def consistency(process: Process, model: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None = None,
                progress: bool = False, *, spacing: str = "karras", timesteps: Timesteps = None) -> Tensor:
    """``steps`` evaluations of the consistency function over ``process.timesteps(steps + 1, spacing)`` (or explicit
    ``timesteps``, t_max first, the last where the walk ends), fresh noise from ``generator`` between them;
    NFE == steps. Stochastic for steps > 1."""
    ts = solver_grid(process, steps, spacing, timesteps, "consistency")
    for i in trange(len(ts) - 1, disable=not progress, desc="consistency"):
        _, x0_pred = eps_and_x0(process, model, x, ts[i])
        alpha, sigma = alpha_sigma(process, ts[i + 1])  # the estimate re-noised to the next time
        x = alpha * x0_pred + sigma * noise_like(x0_pred, generator)
    return x


__all__ = ["consistency"]
