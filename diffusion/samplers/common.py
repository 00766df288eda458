"""Helpers every sampler shares: the model's time argument, noise from a generator, scalar coefficients.

A sampler walks a grid of scalar times, so its coefficients (alpha, sigma, f, g^2) are float64 numbers
computed once per step by the process and applied as Python floats: the state keeps its own dtype.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.processes.base import Process

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


#: ``timesteps=fitted``: sample.py fits the grid to the run (``evaluation.schedule.fitted_schedule``)
FITTED = "fitted"

#: what a sampler's ``timesteps=`` option accepts: explicit times, or the path of a schedule file (``gits.py``)
Timesteps = Sequence[float] | Tensor | str | os.PathLike | None


def grid(process: Process, steps: int, spacing: str, timesteps: Timesteps = None) -> list[float]:
    """``steps`` model times from t_max down to t_min; the sampler ends with one step to the clean data.

    Every sampler's grid goes through here, so every sampler takes ``timesteps=``: explicit times (a list, a
    tensor, or the path of a JSON schedule written by ``optimize_timesteps``) replace ``steps`` and ``spacing``,
    and ``grid(p, n, sp, p.timesteps(n, sp))`` is ``grid(p, n, sp)``."""
    if timesteps is not None:
        return check_timesteps(process, timesteps)
    if int(steps) != steps or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    return process.timesteps(int(steps), spacing).tolist()


def solver_grid(process: Process, steps: int, spacing: str, timesteps: Timesteps, name: str) -> list[float]:
    """The ``steps + 1`` times of the multistep solvers (dpmpp_2m, unipc, ...), which evaluate the model at all but
    the last and stop there; explicit ``timesteps`` (at least 2) replace steps and spacing (NFE = len - 1)."""
    if timesteps is not None:
        ts = check_timesteps(process, timesteps)
        if len(ts) < 2:
            raise ConfigError(f"{name} needs at least 2 timesteps (it stops at the last), got {len(ts)}")
        return ts
    if int(steps) != steps or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    try:
        return grid(process, int(steps) + 1, spacing)
    except ValueError as err:  # the message names steps + 1, which the caller never passed
        raise ConfigError(f"{name} with steps={steps} walks {int(steps) + 1} times: {err}") from None


def schedule_command(fit: str) -> str:
    """The command that writes a schedule file, for messages; ``fit``: what it fits (e.g. ``sampler=<name>``)."""
    return f"`evaluate.py ckpt=<run> task=schedule {fit} steps=<NFE>`"


def fitted_elsewhere(option: str, what: str, fit: str) -> ConfigError:
    """The error for ``<option>=fitted`` anywhere but sample.py, which alone fits it (into the run's schedules)."""
    return ConfigError(f"{option}={FITTED} ({what}) is resolved by sample.py's task=sample alone; here pass a "
                       f"schedule file from {schedule_command(fit)}, or {option}=null")


def check_timesteps(process: Process, timesteps: Timesteps) -> list[float]:
    """Explicit times as floats: finite, strictly decreasing, within [min(t_eps, t_min), t_max] of ``process``.
    A str or path is a schedule file (``gits.load_timesteps``); ``"fitted"`` is resolved by sample.py alone."""
    if isinstance(timesteps, str) and timesteps == FITTED:
        raise fitted_elsewhere("timesteps", "a grid fitted to the run", "sampler=<name>")
    if isinstance(timesteps, (str, os.PathLike)):
        from diffusion.samplers.gits import load_timesteps  # a file written by optimize_timesteps

        timesteps = load_timesteps(timesteps)
    ts = [float(t) for t in (timesteps.tolist() if isinstance(timesteps, Tensor) else timesteps)]
    if not ts:
        raise ConfigError("timesteps is empty: give the times to walk, from t_max down")
    if not all(math.isfinite(t) for t in ts) or any(b >= a for a, b in zip(ts, ts[1:])):
        raise ConfigError(f"timesteps must be finite and strictly decreasing, got {ts}")
    lo, hi = min(process.t_eps, process.t_min), process.t_max
    if ts[0] > hi * (1 + 1e-9) or ts[-1] < lo * (1 - 1e-9):
        raise ConfigError(f"timesteps must lie in [{lo:g}, {hi:g}] for {process!r}, got {ts[0]:g} ... {ts[-1]:g}")
    return ts


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
