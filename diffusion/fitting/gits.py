r"""Time grids fitted to the model: GITS (Chen, Zhou, Lu, Zhao, Huang, Lyu, Wang & Zhou 2024, "On the Trajectory
Regularity of ODE-based Diffusion Sampling", sec. 4), with a refinement on the sampler's own error.

The probability-flow trajectories of a trained model are nearly straight and nearly alike, so one grid fits
them all. GITS finds it by dynamic programming:

1. **Reference.** From n prior draws, solve the ODE on a fine grid t_0 = t_max > ... > t_N = t_min
   (``dpmpp_3m`` with N steps, third order) and keep every state x_k and eps_k = model(x_k, t_k) (the solver's
   own calls: no extra model evaluation).
2. **Costs.** For every pair of fine times i < j, the deviation of one first-order step (DDIM, which is Euler on
   the eps-form ODE) from x_i to t_j from the reference there:

       c_ij = mean_n || alpha_j x0_i + sigma_j eps_i - x_j || / s_j,   x0_i = (x_i - sigma_i eps_i) / alpha_i,

   with s_j = max(1, sqrt(alpha_j^2 + sigma_j^2)): 1 on VP, DDPM, sub-VP and rectified flow, and on VE and EDM
   the scale that x has grown to. Unscaled, an EDM step at sigma = 80 would weigh 80x one near the data and draw
   the path's steps to high noise. Scaled, EDM's costs are VP's, as the two share one ODE in x / alpha.

3. **Path.** The ``steps``-edge path 0 = k_0 < k_1 < ... < k_steps = N of least total cost (a shortest path with a
   fixed number of edges: O(steps N^2)) for a sampler of the ``SOLVER`` layout (``registry.layout``). For samplers
   that end with a denoising step (ddim, euler_maruyama, pc, ddpm) the path has steps - 1 edges to any k, plus the
   cost of denoising there, || x0_pred(x_k) - x_0 ||.

4. **Refine** (``refine`` > 0, beyond GITS). The first-order costs ignore what a higher-order solver does with
   the grid, so each inner time then moves while ``sampler``'s own end error on the same n draws falls: one fine
   index, then strides doubling while the error keeps falling (so a time travels far in one sweep). With
   ``options={"coefficients": "fitted"}`` (``ipndm``) the error is that of iPNDM with its weights refitted for each
   trial grid (``coefficients.py``), on held-out halves of the n draws.

The cost is N + 1 model calls on n samples, and the grid then serves any number of samples. GITS picks the grid
with first-order local errors and uses it with higher-order solvers (the paper pairs it with iPNDM): the local
error of one step is what a grid controls; the solver's order then only rescales it. What it gains, per sampler
and process, is measured in ``benchmarks/samplers.md``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.fitting.coefficients import RIDGES, held_out_error
from diffusion.fitting.schedule_files import FITTED
from diffusion.processes.base import Process
from diffusion.samplers import SAMPLERS, sample
from diffusion.samplers.common import alpha_sigma, model_time
from diffusion.samplers.registry import SOLVER, layout


@torch.no_grad()
def optimize_timesteps(process: Process, model: Callable[..., Tensor], shape: tuple[int, ...], steps: int,
                       sampler: str = "ipndm", generator: torch.Generator | None = None, n: int = 256,
                       fine_steps: int = 100, fine_spacing: str = "logsnr", refine: int = 0,
                       options: dict | None = None, device: torch.device | str | None = None,
                       dtype: torch.dtype = torch.float32) -> list[float]:
    """GITS: ``steps``-NFE times for ``sampler`` (steps + 1 times for a sampler of the ``SOLVER`` layout, which
    stops at the last; ``steps`` for the others, which denoise after the last: ``registry.layout``), chosen on
    ``n`` draws of the prior of ``shape`` (a batch shape as for ``sample``; its first entry is replaced by n).
    Pass the result as ``timesteps=``. Costs fine_steps + 1 model calls on n samples (+1 for the denoising
    samplers). ``refine`` > 0 then runs that many sweeps of coordinate descent on ``sampler``'s own end error
    (with its ``options``) on the same n draws: 2 (steps - 1) sampler runs per sweep, plus one per accepted move."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if int(steps) != steps or steps < 1 or steps >= fine_steps:
        raise ConfigError(f"steps must be an integer in [1, fine_steps={fine_steps}), got {steps!r}")
    if int(n) != n or n < 1:
        raise ConfigError(f"n={n} must be a positive number of fitting draws (schedule.n= on the command line)")
    steps = int(steps)
    states: list[tuple[float, Tensor, Tensor]] = []

    def recorder(x: Tensor, t: Tensor, **kwargs) -> Tensor:
        eps = model(x, t, **kwargs).to(x.dtype)
        states.append((float(t[0]), x, eps))
        return eps

    fine = process.timesteps(fine_steps + 1, fine_spacing).tolist()
    x_end = sample(process, recorder, (n,) + tuple(shape)[1:], "dpmpp_3m", generator=generator, timesteps=fine,
                   device=device, dtype=dtype)
    times = [t for t, _, _ in states] + [fine[-1]]
    xs = [x for _, x, _ in states] + [x_end]
    N = fine_steps
    coefs = [alpha_sigma(process, t) for t in times]
    # in VE and EDM (alpha = 1) x grows to sigma_max = 50-80: raw distances there would dwarf those near the data
    # and draw every step to high noise; measured as VP measures them (x / sqrt(alpha^2 + sigma^2))
    scales = [max(1.0, (alpha ** 2 + sigma ** 2) ** 0.5) for alpha, sigma in coefs]
    cost = torch.full((N + 1, N + 1), float("inf"), dtype=torch.float64)
    for i, (_, x, eps) in enumerate(states):
        alpha, sigma = coefs[i]
        eps = eps.double()
        x0 = (x.double() - sigma * eps) / alpha
        for j in range(i + 1, N + 1):
            alpha_j, sigma_j = coefs[j]
            step = alpha_j * x0 + sigma_j * eps  # DDIM from the reference at t_i to t_j
            cost[i, j] = (step - xs[j].double()).flatten(1).norm(dim=1).mean() / scales[j]
    if layout(sampler) == SOLVER:
        path, goal = _shortest_path(cost, steps, terminal=None), x_end
    else:  # the sampler denoises after its last time: a terminal cost at every end point
        goal = _x0(process, x_end, model(x_end, model_time(times[-1], x_end)).to(x_end.dtype), times[-1])
        terminal = torch.tensor([float((_x0(process, x, eps, t) - goal).flatten(1).norm(dim=1).mean())
                                 for t, x, eps in states] + [0.0], dtype=torch.float64)
        path = _shortest_path(cost, steps - 1, terminal=terminal)
    options = dict(options or {})
    if refine and options.get("coefficients") == FITTED:  # ipndm with its weights refitted for every trial grid
        order = int(options.get("order", 4))
        path = _refine(path, refine, lambda p: min(
            held_out_error(process, model, [times[k] for k in p], [xs[k] for k in p], order, rho, n)
            for rho in RIDGES))
    elif refine:
        path = _refine(path, refine, lambda p: float((sample(process, model, None, sampler, x_T=states[0][1],
                                                                   timesteps=[times[k] for k in p], **options)
                                                            - goal).flatten(1).norm(dim=1).mean()))
    return [times[k] for k in path]


def _refine(path: list[int], sweeps: int, error: Callable[[list[int]], float]) -> list[int]:
    """Coordinate descent on the sampler's own end error, for at most ``sweeps`` passes over the inner times: each
    time tries one fine-grid index either way and, while a move lowers the error, keeps going that way with
    doubled strides (1, 2, 4, ... indices), so a time can travel far in one pass at a few sampler runs a move."""
    best = error(path)
    inner = range(1, len(path) - 1 if path[-1] == max(path) and len(path) > 1 else len(path))
    for _ in range(sweeps):
        moved = False
        for e in inner:
            for direction in (-1, 1):
                stride = 1
                while True:
                    trial = path[:e] + [path[e] + direction * stride] + path[e + 1:]
                    if trial[e] < 0 or not all(b > a for a, b in zip(trial, trial[1:])):
                        break
                    err = error(trial)
                    if err >= best:
                        break
                    best, path, moved = err, trial, True
                    stride *= 2
        if not moved:
            break
    return path


def _x0(process: Process, x: Tensor, eps: Tensor, t: float) -> Tensor:
    alpha, sigma = alpha_sigma(process, t)
    return (x.double() - sigma * eps.double()) / alpha


def _shortest_path(cost: Tensor, edges: int, terminal: Tensor | None) -> list[int]:
    """Indices 0 = k_0 < ... < k_edges minimising sum cost[k_e, k_{e+1}] (+ terminal[k_edges], else k_edges = N)."""
    N = cost.shape[0] - 1
    best = torch.full((edges + 1, N + 1), float("inf"), dtype=torch.float64)
    arg = torch.zeros((edges + 1, N + 1), dtype=torch.long)
    best[0, 0] = 0.0
    for e in range(1, edges + 1):
        total = best[e - 1][:, None] + cost  # (from, to)
        best[e], arg[e] = total.min(0)
    end = int((best[edges] + terminal).argmin()) if terminal is not None else N
    path = [end]
    for e in range(edges, 0, -1):
        path.append(int(arg[e, path[-1]]))
    return path[::-1]



__all__ = ["optimize_timesteps"]
