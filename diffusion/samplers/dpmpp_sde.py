r"""SDE-DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", appendix: the second-order multistep solver of the
reverse SDE in the data-prediction form; diffusers' ``algorithm_type="sde-dpmsolver++"``).

Over lambda = log(alpha / sigma) the reverse SDE dx = [f x - g^2 score] dt + g dW-bar has the exact linear part

    x_s = (sigma_s / sigma_t) e^{-h} x_t + alpha_s (1 - e^{-2h}) x0_pred + sigma_s sqrt(1 - e^{-2h}) z,
    h = lambda_s - lambda_t,

with x0_pred held constant (the first-order step, = DDIM with eta = 1: the Bayes posterior sample). The 2M step
adds a divided difference of the last two data predictions, D1 = (m0 - m1) / r, r = h_prev / h:

    midpoint:  + alpha_s (1 - e^{-2h}) D1 / 2
    heun:      + alpha_s ((1 - e^{-2h}) / (-2h) + 1) D1.

The noise z is fresh at every step, drawn from ``generator`` (one draw per step, in step order). Layout as
dpmpp_2m (``dpm_solver.py``): ``steps + 1`` times, NFE == steps, x returned at t_min; the first step, and the last
below 10 steps, are first order. Stochastic samplers need more steps than the ODE solvers (20-50): their
discretization error is larger, and the noise they inject corrects the error already made.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import trange

from diffusion.processes.base import Process
from diffusion.samplers.common import EpsFn, alpha_sigma, check_choice, eps_and_x0, half_log_snr, noise_like
from diffusion.samplers.grids import Timesteps, solver_grid
from diffusion.samplers.registry import SOLVER, register_sampler
from diffusion.samplers.dpm_solver import LOWER_ORDER_FINAL_BELOW

SOLVER_TYPES = ("midpoint", "heun")


@register_sampler(layout=SOLVER)
def dpmpp_2m_sde(process: Process, model: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None = None,
                 progress: bool = False, *, solver_type: str = "midpoint", spacing: str = "logsnr",
                 timesteps: Timesteps = None) -> Tensor:
    """SDE-DPM-Solver++(2M) from t_max to x at t_min over ``steps + 1`` times (``timesteps`` replaces steps and
    spacing); NFE == steps, one noise draw per step from ``generator``."""
    check_choice("solver_type", solver_type, SOLVER_TYPES)
    ts = solver_grid(process, steps, spacing, timesteps, "dpmpp_2m_sde")
    steps = len(ts) - 1
    lam = [half_log_snr(process, t) for t in ts]
    x0_prev = None
    for i in trange(steps, disable=not progress, desc="dpmpp_2m_sde"):
        _, x0_pred = eps_and_x0(process, model, x, ts[i])
        (_, sigma_t), (alpha_s, sigma_s) = alpha_sigma(process, ts[i]), alpha_sigma(process, ts[i + 1])
        h = lam[i + 1] - lam[i]
        one_minus = -math.expm1(-2 * h)  # 1 - e^{-2h}
        x = (sigma_s / sigma_t) * math.exp(-h) * x + alpha_s * one_minus * x0_pred
        if x0_prev is not None and not (i + 1 == steps and steps < LOWER_ORDER_FINAL_BELOW):
            d1 = (x0_pred - x0_prev) * h / (lam[i] - lam[i - 1])
            x = x + alpha_s * (one_minus / 2 if solver_type == "midpoint" else one_minus / (-2 * h) + 1) * d1
        x = x + sigma_s * math.sqrt(one_minus) * noise_like(x, generator)
        x0_prev = x0_pred
    return x


__all__ = ["dpmpp_2m_sde", "SOLVER_TYPES"]
