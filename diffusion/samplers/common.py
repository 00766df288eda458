"""Helpers every sampler shares: the model's time argument, noise from a generator, scalar coefficients, the order
of a multistep step. The grids are ``grids.py``'s.

A sampler walks a grid of scalar times, so its coefficients (alpha, sigma, f, g^2) are float64 numbers
computed once per step by the process and applied as Python floats: the state keeps its own dtype.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.processes.base import Process
# the grids have a module of their own (``grids.py``); these names stay importable from here, where they were
from diffusion.samplers.grids import Timesteps, check_timesteps, grid, solver_grid  # noqa: F401

#: ``model(x, t) -> eps``: t has shape (batch,) in the process's own time
EpsFn = Callable[[Tensor, Tensor], Tensor]


def model_time(t: float | Tensor, x: Tensor) -> Tensor:
    """The time argument for ``model(x, t)``: shape (batch,), float64 (float32 on MPS, which has no float64)."""
    dtype = torch.float32 if x.device.type == "mps" else torch.float64
    return torch.full((x.shape[0],), float(t), dtype=dtype, device=x.device)


def noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like x, drawn from ``generator`` on the generator's own device, so a CPU
    generator reproduces the same draws for a CUDA state (the order of draws is part of a sampler's contract)."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def t64(t: float) -> Tensor:
    """A scalar time as a float64 tensor (a bare torch.tensor(t) would round it to float32)."""
    return torch.tensor(float(t), dtype=torch.float64)


def alpha_sigma(process: Process, t: float) -> tuple[float, float]:
    """alpha(t) and sigma(t) as float64 numbers."""
    time = t64(t)
    return math.exp(float(process.log_alpha(time))), math.sqrt(max(float(process.sigma2(time)), 0.0))


def half_log_snr(process: Process, t: float) -> float:
    """log(alpha / sigma) = lambda(t) / 2, the time variable of DPM-Solver."""
    return 0.5 * float(process.log_snr(t64(t)))


def f_g2(process: Process, t: float) -> tuple[float, float]:
    """The SDE's drift coefficient f(t) (f(x, t) = f(t) x) and squared diffusion g(t)^2."""
    time = t64(t)
    return float(process.f_coef(time)), float(process.g2(time))


def transition(process: Process, t: float, s: float) -> tuple[float, float]:
    """alpha_{t|s} = alpha_t / alpha_s and sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2: q(x_t | x_s), s < t."""
    time_t, time_s = t64(t), t64(s)
    alpha_ts = math.exp(float(process.log_alpha(time_t) - process.log_alpha(time_s)))
    sigma2_ts = max(float(process.sigma2(time_t)) - alpha_ts**2 * float(process.sigma2(time_s)), 0.0)
    return alpha_ts, sigma2_ts


def eps_and_x0(process: Process, model: EpsFn, x: Tensor, t: float) -> tuple[Tensor, Tensor]:
    """The model's eps at (x, t) and the matching data estimate x0_pred = (x - sigma eps) / alpha (Tweedie)."""
    alpha, sigma = alpha_sigma(process, t)
    eps = model(x, model_time(t, x)).to(x.dtype)
    return eps, (x - sigma * eps) / alpha


#: below this many steps the third-order multistep solvers (dpmpp_3m, unipc) lower their order over the last
#: steps (order <= steps - i): with 10 steps on a uniform-in-t grid, the last step spans half the log-SNR range
#: and a third-order extrapolation from the short steps before it diverges (benchmarks/samplers.md).
#: diffusers uses 15 for its DPM-Solver.
HIGH_ORDER_FINAL_BELOW = 15


#: a third-order multistep step extrapolates the history's curvature over the new step: when the step is this many
#: times longer (in log-SNR) than one of the previous two, the extrapolation amplifies their errors ~ratio^2 and
#: the step falls back to second order (a GITS grid at 10 NFE has a 6.5x jump: UniPC-3 then lands 30x further
#: from the ODE solution than UniPC-2; uniform and logsnr grids never trigger it)
MAX_THIRD_ORDER_RATIO = 3.0


def multistep_order(order: int, i: int, steps: int, lam: list[float]) -> int:
    """The order of step i -> i + 1 of a multistep solver on the log-SNR grid ``lam``: warm-up (<= i + 1), lower
    order over the last steps below ``HIGH_ORDER_FINAL_BELOW`` steps (<= steps - i), and second order after a
    jump in step size (``MAX_THIRD_ORDER_RATIO``)."""
    p = min(order, i + 1, steps - i if steps < HIGH_ORDER_FINAL_BELOW else order)
    if p >= 3:
        h = lam[i + 1] - lam[i]
        if h > MAX_THIRD_ORDER_RATIO * min(lam[i] - lam[i - 1], lam[i - 1] - lam[i - 2]):
            p = 2
    return p


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(map(str, choices))}")
