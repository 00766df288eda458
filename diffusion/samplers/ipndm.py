r"""iPNDM: improved pseudo numerical methods (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with
Exponential Integrator", appendix; the ``ipndm`` of Zhou et al. 2024's diff-solvers), linear multistep on the
eps-form of the probability-flow ODE.

With y = x / alpha and s = sigma / alpha = e^{-lambda} (Karras et al. 2022's sigma; y and s are EDM's x and sigma)
the probability-flow ODE of every process is

    dy / ds = eps(alpha y, t(s)),

linear in nothing, but with an integrand that is nearly constant along the paths. iPNDM integrates it with
Adams-Bashforth of order k = min(order, i + 1) from the last k evaluations (a lower-order warm-up replaces PNDM's
Runge-Kutta start, which cost 3 extra calls per step):

    y_{i+1} = y_i + (s_{i+1} - s_i) sum_j c_{k,j} eps_{i-j},
    c_1 = [1], c_2 = [3, -1]/2, c_3 = [23, -16, 5]/12, c_4 = [55, -59, 37, -9]/24,

the uniform-step coefficients (``variable_step=False``, as in the papers), or the coefficients of the
Adams-Bashforth formula for the actual, uneven steps: c_{k,j} = mean over [s_i, s_{i+1}] of the Lagrange basis
polynomial of s_{i-j} through s_i, ..., s_{i-k+1} (``variable_step=True``; order k on any grid, while the uniform
coefficients lose order where neighbouring steps differ).

Layout as dpmpp_2m (``dpm_solver.py``): ``steps + 1`` times, the model called at all but the last, x returned at
t_min (as diff-solvers does); NFE == steps.

Grid: iPNDM's fixed weights assume even steps, so it does best on a grid fitted to it (GITS,
``diffusion/fitting/gits.py``; the numbers are in ``benchmarks/samplers.md``), and better still with weights fitted
to the model on that grid (``coefficients=``, ``diffusion/fitting/coefficients.py``).
Of the fixed grids, uniform in t is the most robust on DDPM and the SDEs: logsnr loses at 5 NFE on every process.
The default, ``spacing="default"``, is the process's own grid: uniform in t there, Karras's sigmas on EDM
(uniform in sigma would put EDM's steps far from the data).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor
from tqdm.auto import trange

from diffusion.errors import ConfigError
from diffusion.processes.base import Process
from diffusion.samplers.common import EpsFn, alpha_sigma, model_time
from diffusion.samplers.grids import Timesteps, is_reference, solver_grid, unresolved
from diffusion.samplers.registry import SOLVER, register_sampler

#: what ``ipndm(coefficients=...)`` accepts: per-step weights, newest evaluation first (None: Adams-Bashforth's)
Coefficients = Sequence[Sequence[float]] | None

#: uniform-step Adams-Bashforth coefficients, newest evaluation first
ADAMS_BASHFORTH = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12),
                   4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def adams_bashforth(nodes: list[float], end: float) -> list[float]:
    """Variable-step Adams-Bashforth weights: the mean over [nodes[0], end] of each Lagrange basis polynomial
    through ``nodes`` (newest first), so that y += (end - nodes[0]) sum_j w_j f(nodes[j]) integrates exactly the
    polynomial interpolant of f."""
    a, weights = nodes[0], []
    for j, node_j in enumerate(nodes):
        poly = [1.0]  # coefficients in u = s - a, lowest first
        denom = 1.0
        for k, node_k in enumerate(nodes):
            if k != j:  # multiply by (u - (node_k - a))
                c = node_k - a
                poly = [(poly[i - 1] if i else 0.0) - c * (poly[i] if i < len(poly) else 0.0)
                        for i in range(len(poly) + 1)]
                denom *= node_j - node_k
        width = end - a
        weights.append(sum(p * width**i / (i + 1) for i, p in enumerate(poly)) / denom)
    return weights


def check_coefficients(coefficients: Sequence[Sequence[float]], steps: int, order: int) -> list[list[float]]:
    """Per-step weights as lists of floats: one list per step, with 1 <= len <= min(order, i + 1) finite weights at
    step i. (A schedule file's weights are read by ``diffusion.fitting.load_coefficients``.)"""
    if is_reference(coefficients):
        raise unresolved("coefficients", coefficients)
    rows = [[float(c) for c in row] for row in coefficients]
    if len(rows) != steps:
        raise ConfigError(f"coefficients has {len(rows)} rows for {steps} steps: fit them for this grid")
    for i, row in enumerate(rows):
        if not 1 <= len(row) <= min(order, i + 1) or not all(math.isfinite(c) for c in row):
            raise ConfigError(f"coefficients row {i} must hold 1 to {min(order, i + 1)} finite weights, got {row}")
    return rows


@register_sampler(layout=SOLVER)
def ipndm(process: Process, model: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None = None,
          progress: bool = False, *, order: int = 4, variable_step: bool = False, spacing: str = "default",
          timesteps: Timesteps = None, coefficients: Coefficients = None) -> Tensor:
    """iPNDM of ``order`` (1-4) from t_max to x at t_min over ``steps + 1`` times (``timesteps`` replaces steps and
    spacing); NFE == steps. Deterministic. ``coefficients``: each step's weights in place of Adams-Bashforth's
    (newest evaluation first; a list per step: ``diffusion.fitting.fit_coefficients``), fitted to the model for
    this grid."""
    if order not in ADAMS_BASHFORTH:
        raise ConfigError(f"order must be 1, 2, 3 or 4, got {order!r}")
    ts = solver_grid(process, steps, spacing, timesteps, "ipndm")
    fitted = None
    if coefficients is not None:
        if variable_step:
            raise ConfigError("variable_step and coefficients exclude each other: fitted coefficients replace the "
                              "Adams-Bashforth weights of either kind")
        fitted = check_coefficients(coefficients, len(ts) - 1, order)
    alpha, sigma = zip(*(alpha_sigma(process, t) for t in ts))
    s = [sg / a for a, sg in zip(alpha, sigma)]  # sigma / alpha, decreasing
    eps: list[Tensor] = []  # newest first
    y = x / alpha[0]
    for i in trange(len(ts) - 1, disable=not progress, desc="ipndm"):
        eps = [model(alpha[i] * y, model_time(ts[i], x)).to(x.dtype)] + eps[:3]
        k = min(order, i + 1)
        if fitted is not None:
            weights = fitted[i]
        else:
            weights = adams_bashforth(s[i::-1][:k], s[i + 1]) if variable_step else ADAMS_BASHFORTH[k]
        y = y + (s[i + 1] - s[i]) * sum(w * e for w, e in zip(weights, eps))
    return alpha[-1] * y


__all__ = ["ipndm", "adams_bashforth", "check_coefficients", "ADAMS_BASHFORTH", "Coefficients"]
