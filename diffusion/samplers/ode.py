r"""The probability-flow ODE (Song et al. 2021, eq. 13) solved with torchdiffeq:

    dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t),   score = -eps(x, t) / sigma(t),

whose solution has the forward marginals p_t at every t (``sde.py`` derives it as the lambda = 0 member of the
reverse-SDE family). It is deterministic and invertible: ``encode`` maps data at t_min to a latent at t_max,
``decode`` maps it back, and the ``ode`` sampler is ``decode`` followed by the final denoising step.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchdiffeq import odeint
from tqdm.auto import tqdm

from diffusion.processes.base import Process
from diffusion.samplers.common import EpsFn, Timesteps, check_choice, eps_and_x0, grid, model_time
from diffusion.utils import append_dims

#: torchdiffeq methods that step on a fixed grid (the others adapt their step to rtol/atol)
FIXED_GRID_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams", "fixed_adams")
_ADAPTIVE_RK = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
METHODS = _ADAPTIVE_RK + FIXED_GRID_METHODS + ("scipy_solver",)


def probability_flow_drift(process: Process, model: EpsFn, x: Tensor, t: Tensor | float) -> Tensor:
    """f(x, t) - 1/2 g(t)^2 score(x, t) with score = -model(x, t) / sigma(t); t: a scalar or shape (batch,).
    Differentiable in x (the likelihood code takes its divergence)."""
    t = t.reshape(-1).expand(x.shape[0]) if isinstance(t, Tensor) else model_time(t, x)
    t64 = t.double()
    sigma = append_dims(process.sigma(t64).to(x.dtype), x.ndim)
    g2 = append_dims(process.g2(t64).to(x.dtype), x.ndim)
    score = -model(x, t).to(x.dtype) / sigma
    return process.f(x, t) - 0.5 * g2 * score


VARIABLES = ("auto", "t", "log_snr")


def _solve(process: Process, model: EpsFn, x: Tensor, times: Tensor, method: str, rtol: float, atol: float,
           step_size: float | None, variable: str = "auto", progress: bool = False) -> Tensor:
    """x at times[0] carried along the ODE to times[-1], integrating over ``variable`` (see ``ode``)."""
    check_choice("ODE method", method, METHODS)
    check_choice("ODE variable", variable, VARIABLES)
    if variable == "auto":
        variable = "t" if process.continuous else "log_snr"
    bar = tqdm(disable=not progress, desc=f"ode ({method})", unit="nfe")
    solver_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    time_dtype = torch.float32 if x.device.type == "mps" else torch.float64

    def drift_in_t(t: Tensor, y: Tensor) -> Tensor:
        bar.update()
        return probability_flow_drift(process, model, y, t.to(y.device, time_dtype))

    def drift_in_log_snr(lam: Tensor, y: Tensor) -> Tensor:
        # dx/dlambda = (dx/dt) / (dlambda/dt) with dlambda/dt = -g^2 / sigma^2: the jumps of f and g^2 in t cancel
        bar.update()
        t = process.t_from_log_snr(lam.detach().reshape(1).cpu().double())  # a scalar: cheaper on the CPU
        dlam_dt = float(-process.g2(t) / process.sigma2(t))
        return probability_flow_drift(process, model, y, t.to(y.device, time_dtype)) / dlam_dt

    drift = drift_in_t
    if variable == "log_snr":
        times, drift = process.log_snr(times.double()), drift_in_log_snr
    times = times.to(x.device, solver_dtype)
    options = {} if step_size is None else {"step_size": step_size}
    if method in _ADAPTIVE_RK:
        # torchdiffeq steps past the last time and interpolates back; past t_min sigma -> 0 and the score
        # blows up, so make the solver land on the end time instead
        options["step_t"] = times
    out = odeint(drift, x, times, rtol=rtol, atol=atol, method=method, options=options)[-1]
    bar.close()
    return out


def ode(process: Process, model: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None = None,
        progress: bool = False, *, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
        step_size: float | None = None, spacing: str = "uniform", variable: str = "auto",
        timesteps: Timesteps = None) -> Tensor:
    """Solve the probability-flow ODE from t_max to t_min, then denoise with x0_pred at t_min.

    ``steps`` matters only for a fixed-grid ``method`` (euler, midpoint, rk4, ...) without ``step_size``: the
    solver then steps over ``process.timesteps(steps, spacing)`` (Euler: NFE == steps with the final
    denoising). Adaptive methods (dopri5, the default, bosh3, ...) choose their own steps from rtol/atol and
    ignore ``steps``; NFE is then the solver's count plus one for the final denoising. ``generator`` is unused:
    the sampler is deterministic given x_T.

    variable: what the solver integrates over: ``t`` (dx/dt as written) or ``log_snr``, the same ODE over
    lambda = log(alpha^2 / sigma^2): dx/dlambda = (dx/dt) / (dlambda/dt), dlambda/dt = -g^2 / sigma^2. ``auto``
    (default) takes ``t`` for the SDEs and ``log_snr`` for DDPM: its piecewise-constant beta(t) makes f and g^2
    jump at every integer t, which an adaptive solver's error estimate misses (dopri5 on a Gaussian: 1e-3 error
    at rtol 1e-7 with 2300 NFE); over lambda the jumps cancel (dx/dlambda = (sigma^2 x - sigma eps)/2 for every
    VP-type process) and the same solve is accurate to 3e-8 with 180 NFE. ``step_size`` is in units of the variable.
    """
    if method in FIXED_GRID_METHODS and step_size is None:
        if steps < 2 and timesteps is None:
            raise ValueError(f"a fixed-grid ODE method needs steps >= 2, got {steps}")
        times = torch.tensor(grid(process, steps, spacing, timesteps), dtype=torch.float64)
    else:  # adaptive: explicit timesteps set only the ends
        ends = grid(process, 1, spacing, timesteps) if timesteps is not None else [process.t_max, process.t_min]
        times = torch.tensor([ends[0], ends[-1]], dtype=torch.float64)
    if len(times) < 2 or times[0] == times[-1]:
        raise ValueError("the ODE sampler needs at least 2 timesteps (start and end)")
    x = _solve(process, model, x, times, method, rtol, atol, step_size, variable, progress)
    return eps_and_x0(process, model, x, float(times[-1]))[1]


@torch.no_grad()
def encode(process: Process, model: EpsFn, x: Tensor, rtol: float = 1e-5, atol: float = 1e-5,
           method: str = "dopri5", step_size: float | None = None, t_min: float | None = None,
           variable: str = "auto") -> Tensor:
    """The ODE latent z at t_max of data x taken at t_min (default ``process.t_min``); inverse of ``decode``."""
    t_lo = process.t_min if t_min is None else t_min
    times = torch.tensor([t_lo, process.t_max], dtype=torch.float64)
    return _solve(process, model, x, times, method, rtol, atol, step_size, variable)


@torch.no_grad()
def decode(process: Process, model: EpsFn, z: Tensor, rtol: float = 1e-5, atol: float = 1e-5,
           method: str = "dopri5", step_size: float | None = None, t_min: float | None = None,
           variable: str = "auto") -> Tensor:
    """x at t_min (default ``process.t_min``) of the latent z at t_max; no final denoising, so it inverts ``encode``."""
    t_lo = process.t_min if t_min is None else t_min
    times = torch.tensor([process.t_max, t_lo], dtype=torch.float64)
    return _solve(process, model, z, times, method, rtol, atol, step_size, variable)


__all__ = ["ode", "encode", "decode", "probability_flow_drift", "FIXED_GRID_METHODS", "VARIABLES"]
