r"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models", algorithm 2), the multistep second-order solver in the data-prediction form.

With lambda = log(alpha / sigma) the probability-flow ODE solved exactly in its linear part reads
(Lu et al. eq. 9)

    x_s = (sigma_s / sigma_t) x_t + sigma_s int_{lambda_t}^{lambda_s} e^{lambda} x0_pred(x_lambda) d lambda.

Holding x0_pred constant gives the first-order step (= DDIM, eta = 0); DPM-Solver++(2M) instead extrapolates
linearly in lambda through the current and previous x0_pred, with h_i = lambda_i - lambda_{i-1}, r_i = h_{i-1}/h_i:

    D_i = (1 + 1/(2 r_i)) x0_pred_{i-1} - 1/(2 r_i) x0_pred_{i-2}
    x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (e^{-h_i} - 1) D_i.

Layout (as the authors' ``DPM_Solver.sample(method="multistep", lower_order_final=True)``): ``steps`` steps over
the ``steps + 1`` times ``process.timesteps(steps + 1, spacing)``, the model called at all but the last, t_min,
where the solver stops and returns x (sigma(t_min) ~ 0.01 on every process). So NFE == steps and no call is
spent on a final denoising at t_min, which moves x by only ~sigma(t_min). The first step is first order (no
history yet), and so is the last when steps < 10 (``lower_order_final``: a second-order extrapolation over
the last, longest step in lambda overshoots when there are few steps). Only alpha and sigma are needed, so
every process runs it (DDPM through its continuous view, at fractional step indices; VE with alpha = 1).

The endpoint layout and the default ``logsnr`` grid were chosen by measurement on the exact mixtures of
``benchmarks/samplers.py``: the tables are in ``benchmarks/samplers.md`` ("DPM-Solver++(2M): endpoint layout and
time grids"). In short, ``logsnr`` is the most accurate at 10 and 20 NFE on VP/DDPM and the only grid robust on the
cosine schedule; at <= 5 NFE ``spacing="uniform"`` is better on VP and sub-VP.
``tests/samplers/test_dpm_solver.py::test_default_spacing`` (slow) re-measures the 10-NFE choice, and
``benchmarks/grid_defaults.py`` re-checks every multistep solver's default on mixtures of other shapes.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import trange

from diffusion.processes.base import Process
from diffusion.samplers.common import EpsFn, alpha_sigma, eps_and_x0, half_log_snr
from diffusion.samplers.grids import Timesteps, solver_grid
from diffusion.samplers.registry import SOLVER, register_sampler

#: below this many steps the last step is first order (the authors' ``lower_order_final`` rule)
LOWER_ORDER_FINAL_BELOW = 10


@register_sampler(layout=SOLVER)
def dpmpp_2m(process: Process, model: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None = None,
             progress: bool = False, *, spacing: str = "logsnr", timesteps: Timesteps = None) -> Tensor:
    """DPM-Solver++(2M) from t_max to x at t_min over ``process.timesteps(steps + 1, spacing)``; the model is
    called at the first ``steps`` times, so NFE == steps. Deterministic (``generator`` is unused). Explicit
    ``timesteps`` (steps + 1 times, the last where it stops) replace steps and spacing."""
    ts = solver_grid(process, steps, spacing, timesteps, "dpmpp_2m")
    steps = len(ts) - 1
    x0_prev, h_prev = None, None
    for i in trange(steps, disable=not progress, desc="dpmpp_2m"):
        t, s = ts[i], ts[i + 1]
        _, x0_pred = eps_and_x0(process, model, x, t)
        (_, sigma_t), (alpha_s, sigma_s) = alpha_sigma(process, t), alpha_sigma(process, s)
        h = half_log_snr(process, s) - half_log_snr(process, t)
        if x0_prev is None or (i + 1 == steps and steps < LOWER_ORDER_FINAL_BELOW):
            d = x0_pred
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0_pred - 1 / (2 * r) * x0_prev
        x = (sigma_s / sigma_t) * x - alpha_s * math.expm1(-h) * d
        x0_prev, h_prev = x0_pred, h
    return x


__all__ = ["dpmpp_2m"]
