r"""Multistep consistency sampling (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", algorithm 1).

A consistency model maps any x_t straight to the end of its ODE trajectory, x0_pred = f(x_t, t). One step is that
map at t_max. Each further step re-noises the estimate to an earlier time tau_i with fresh noise,
x = alpha(tau_i) x0_pred + sigma(tau_i) z, z ~ N(0, I) (a draw of q(x_tau | x0_pred)), and maps it again:

    x0_pred <- f(x_{t_max}, t_max);   for tau_1 > tau_2 > ...:  x0_pred <- f(alpha_tau x0_pred + sigma_tau z, tau).

The times are the first ``steps`` of ``process.timesteps(steps + 1, spacing)`` (t_min, where f is the identity,
is never a step), or explicit ``timesteps``. Through the eps interface f is the model's x0_pred, so this runs any
model; it is meant for a distilled consistency student (``diffusion.distillation``), where 1-4 steps suffice.
"""
from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from diffusion.processes.base import Process
from diffusion.samplers.common import EpsFn, alpha_sigma, eps_and_x0, noise_like
from diffusion.samplers.grids import Timesteps, grid
from diffusion.samplers.registry import register_sampler


@register_sampler()
def consistency(process: Process, model: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None = None,
                progress: bool = False, *, spacing: str = "karras", timesteps: Timesteps = None) -> Tensor:
    """``steps`` evaluations of the consistency function with fresh noise between them; NFE == steps.
    Stochastic for steps > 1 (noise from ``generator``). ``timesteps``: the times to evaluate at, t_max first."""
    ts = grid(process, steps, spacing, timesteps) if timesteps is not None else grid(process, steps + 1, spacing)[:-1]
    x0_pred = x
    for i, t in enumerate(tqdm(ts, disable=not progress, desc="consistency")):
        if i > 0:
            alpha, sigma = alpha_sigma(process, t)
            x = alpha * x0_pred + sigma * noise_like(x0_pred, generator)
        _, x0_pred = eps_and_x0(process, model, x, t)
    return x0_pred


__all__ = ["consistency"]
