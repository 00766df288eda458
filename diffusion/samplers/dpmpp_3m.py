r"""DPM-Solver++(3M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models", sec. 4 and appendix), the third-order multistep solver in the data-prediction form.

With lambda = log(alpha / sigma) and h = lambda_s - lambda_t > 0, the probability-flow ODE solved exactly in its
linear part (Lu et al. eq. 9) is

    x_s = (sigma_s / sigma_t) x_t + sigma_s int_{lambda_t}^{lambda_s} e^{lambda} x0_pred(x_lambda) d lambda.

Expanding x0_pred = D in lambda around the current point, D(lambda_t + u) = D + u D' + u^2/2 D'' + O(u^3), the
integral is exact term by term:

    x_s = (sigma_s / sigma_t) x_t - alpha_s phi_1 D + alpha_s h phi_2 D' - alpha_s h^2 phi_3 D'',
    phi_1 = e^{-h} - 1,   phi_2 = phi_1 / h + 1,   phi_3 = phi_2 / h - 1/2.

The multistep method estimates the derivatives from the last three data predictions m0, m1, m2 at lambda_0 >
lambda_1 > lambda_2 (h_0 = lambda_0 - lambda_1, h_1 = lambda_1 - lambda_2, r_k = h_k / h):

    D1_0 = (m0 - m1) / r0,  D1_1 = (m1 - m2) / r1          (~ h D' at the midpoints)
    D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1)              (= h D' + O(h^3))
    D2 = (D1_0 - D1_1) / (r0 + r1)                        (= h^2 D'' / 2 + O(h^3))

so the third-order update is x_s = (sigma_s/sigma_t) x_t - alpha_s phi_1 m0 + alpha_s phi_2 D1 - alpha_s phi_3 D2_COEF D2.
The authors' code and diffusers use D2_COEF = 1, which weights the D'' term by half of its Taylor value: the local
error is then O(h^3), second order, not third. Here D2_COEF = 2, the Taylor value, and the test
``test_dpmpp_3m_is_third_order`` sees the difference (error ratio ~8 per halving, against ~4 for the peers' form).

Warm-up: the first step is first order (DDIM), the second is DPM-Solver++(2M)'s. Layout, lower-order final steps
and the returned x at t_min are dpmpp_2m's (``dpm_solver.py``): NFE == steps; with fewer than 15 steps the last
two steps drop to orders 1 and 2 (``common.HIGH_ORDER_FINAL_BELOW``; the authors' ``lower_order_final``), and a third-order step
after a 3x jump in step size drops to second order (``common.multistep_order``: GITS grids have such jumps).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import trange

from diffusion.processes.base import Process
from diffusion.samplers.common import EpsFn, alpha_sigma, eps_and_x0, half_log_snr, multistep_order
from diffusion.samplers.grids import Timesteps, solver_grid
from diffusion.samplers.registry import SOLVER, register_sampler

#: weight of D2 = h^2 D''/2 against phi_3: 2 is the Taylor coefficient (the peers use 1: see the module docstring)
D2_COEF = 2.0


@register_sampler(layout=SOLVER)
def dpmpp_3m(process: Process, model: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None = None,
             progress: bool = False, *, spacing: str = "logsnr", timesteps: Timesteps = None) -> Tensor:
    """DPM-Solver++(3M) from t_max to x at t_min over ``steps + 1`` times (``timesteps`` replaces steps and
    spacing); the model is called at all but the last, so NFE == steps. Deterministic."""
    ts = solver_grid(process, steps, spacing, timesteps, "dpmpp_3m")
    steps = len(ts) - 1
    lam = [half_log_snr(process, t) for t in ts]
    m: list[Tensor] = []  # data predictions, newest first
    for i in trange(steps, disable=not progress, desc="dpmpp_3m"):
        m = [eps_and_x0(process, model, x, ts[i])[1]] + m[:2]
        (_, sigma_t), (alpha_s, sigma_s) = alpha_sigma(process, ts[i]), alpha_sigma(process, ts[i + 1])
        h = lam[i + 1] - lam[i]
        order = multistep_order(3, i, steps, lam)
        phi_1 = math.expm1(-h)
        x = (sigma_s / sigma_t) * x - alpha_s * phi_1 * m[0]
        if order == 2:
            r0 = (lam[i] - lam[i - 1]) / h
            x = x - alpha_s * phi_1 * (m[0] - m[1]) / (2 * r0)
        elif order == 3:
            r0, r1 = (lam[i] - lam[i - 1]) / h, (lam[i - 1] - lam[i - 2]) / h
            d1_0, d1_1 = (m[0] - m[1]) / r0, (m[1] - m[2]) / r1
            d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_2 = phi_1 / h + 1
            phi_3 = phi_2 / h - 0.5
            x = x + alpha_s * phi_2 * d1 - D2_COEF * alpha_s * phi_3 * d2
    return x


__all__ = ["dpmpp_3m"]
