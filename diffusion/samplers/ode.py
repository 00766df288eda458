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

from diffusion.errors import ConfigError
from diffusion.probability_flow import CLOCKS, flow_coefficients, from_clock, to_clock
from diffusion.processes.base import Process
from diffusion.samplers.registry import register_sampler
from diffusion.samplers.common import EpsFn, check_choice, eps_and_x0, model_time
from diffusion.samplers.grids import Timesteps, grid
from diffusion.utils import append_dims

#: torchdiffeq methods that step on a fixed grid (the others adapt their step to rtol/atol)
FIXED_GRID_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams", "fixed_adams")
_ADAPTIVE_RK = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
METHODS = _ADAPTIVE_RK + FIXED_GRID_METHODS + ("scipy_solver",)


def probability_flow_drift(process: Process, model: EpsFn, x: Tensor, t: Tensor | float, clock: str = "t") -> Tensor:
    """dx/d(clock) of the probability-flow ODE: f(x, t) - 1/2 g(t)^2 score(x, t) with score = -model(x, t) / sigma(t)
    for ``clock="t"`` (``diffusion.probability_flow``); t: a scalar or shape (batch,). Differentiable in x."""
    t = t.reshape(-1).expand(x.shape[0]) if isinstance(t, Tensor) else model_time(t, x)
    a, b = flow_coefficients(process, t, clock)
    eps = model(x, t).to(x.dtype)
    return append_dims(a.to(x.dtype), x.ndim) * x + append_dims(b.to(x.dtype), x.ndim) * eps


VARIABLES = ("auto",) + CLOCKS


def _solve(process: Process, model: EpsFn, x: Tensor, times: Tensor, method: str, rtol: float, atol: float,
           step_size: float | None, variable: str = "auto", progress: bool = False) -> Tensor:
    """x at times[0] carried along the ODE to times[-1], integrating over ``variable`` (see ``ode``)."""
    check_choice("ODE method", method, METHODS)
    check_choice("ODE variable", variable, VARIABLES)
    clock = process.ode_clock if variable == "auto" else variable
    bar = tqdm(disable=not progress, desc=f"ode ({method})", unit="nfe")
    solver_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    time_dtype = torch.float32 if x.device.type == "mps" else torch.float64

    def drift(value: Tensor, y: Tensor) -> Tensor:
        bar.update()
        t = from_clock(process, value.detach().reshape(1).cpu(), clock)  # a scalar: cheaper on the CPU
        return probability_flow_drift(process, model, y, t.to(y.device, time_dtype), clock)

    times = to_clock(process, times, clock).to(x.device, solver_dtype)
    options = {} if step_size is None else {"step_size": step_size}
    if method in _ADAPTIVE_RK:
        # torchdiffeq steps past the last time and interpolates back; past t_min sigma -> 0 and the score
        # blows up, so make the solver land on the end time instead
        options["step_t"] = times
    out = odeint(drift, x, times, rtol=rtol, atol=atol, method=method, options=options)[-1]
    bar.close()
    return out


@register_sampler()
def ode(process: Process, model: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None = None,
        progress: bool = False, *, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
        step_size: float | None = None, spacing: str = "default", variable: str = "auto",
        timesteps: Timesteps = None) -> Tensor:
    """Solve the probability-flow ODE from t_max to t_min, then denoise with x0_pred at t_min.

    ``steps`` matters only for a fixed-grid ``method`` (euler, midpoint, rk4, ...) without ``step_size``: the
    solver then steps over ``process.timesteps(steps, spacing)`` (Euler: NFE == steps with the final
    denoising). Adaptive methods (dopri5, the default, bosh3, ...) choose their own steps from rtol/atol and
    ignore ``steps``; NFE is then the solver's count plus one for the final denoising. ``generator`` is unused:
    the sampler is deterministic given x_T.

    variable: what the solver integrates over (``diffusion.probability_flow``): ``t`` (dx/dt as written) or
    ``log_snr``, the same ODE over lambda = log(alpha^2 / sigma^2). ``auto`` (default) takes the process's
    ``ode_clock``: ``log_snr`` for DDPM, whose piecewise-constant beta(t) makes f and g^2 jump at every integer t
    (an adaptive solver's error estimate misses the jumps; over lambda they cancel), ``t`` for the SDEs.
    ``step_size`` is in units of the variable.
    """
    if method in FIXED_GRID_METHODS and step_size is None:
        if steps < 2 and timesteps is None:
            raise ConfigError(f"a fixed-grid ODE method needs steps >= 2, got {steps}")
        times = torch.tensor(grid(process, steps, spacing, timesteps), dtype=torch.float64)
    else:  # adaptive: explicit timesteps set only the ends
        ends = grid(process, 1, spacing, timesteps) if timesteps is not None else [process.t_max, process.t_min]
        times = torch.tensor([ends[0], ends[-1]], dtype=torch.float64)
    if len(times) < 2 or times[0] == times[-1]:
        raise ConfigError("the ODE sampler needs at least 2 timesteps (start and end)")
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
