r"""Multistep weights fitted to the model: the iPNDM step with per-step coefficients chosen by least squares.

On a grid of times t_0 > ... > t_K, iPNDM (``samplers/ipndm.py``) integrates the eps-form probability-flow ODE
dy/ds = eps in y = x / alpha, s = sigma / alpha with Adams-Bashforth weights,

    y_{i+1} = y_i + (s_{i+1} - s_i) sum_j c_{ij} eps_{i-j},

weights that are exact for a polynomial eps(s). At a few steps eps is far from a polynomial over a step, and the
best weights for *this* model's trajectories differ from Adams-Bashforth's. They can be fitted, as the grid is
(``gits.py``): from n prior draws, solve the ODE finely through the grid (``dpmpp_3m`` with ``substeps`` steps,
uniform in log-SNR, inside each interval), then walk the grid with the solver itself and choose each step's weights
as the ridge least-squares fit of the step that lands on the reference:

    c_i = argmin_c || (y*_{i+1} - y_i) / (s_{i+1} - s_i) - E_i c ||^2 + rho m || c - c_AB ||^2,

E_i = the solver's own last k evaluations as columns (m rows: n draws x the data's dimensions), y_i the solver's
own state (so later steps correct the earlier ones' residual), y*_{i+1} the reference, c_AB the Adams-Bashforth
weights it is pulled towards. The ridge rho is chosen on held-out draws: weights fitted on half of them, for each
rho of ``ridges``, are scored by the end error || x_K - x*_K || of the other half (and the halves swapped), and
the best rho is refitted on all n. Each fit is closed form (a k x k system, k <= 4 per step).

The idea of fitting a solver's coefficients to the model's trajectories is that of bespoke solvers (Shaul et al.
2024, "Bespoke Solvers for Generative Flow Models"), DPM-Solver-v3 (Zheng et al. 2023: coefficients from
"empirical model statistics") and S4S (Frankel et al. 2025, "S4S: Solving for a Diffusion Model Solver"); this is
the closed-form linear-multistep case of it. The cost: n x (K substeps + K) model calls for the reference and the
walk, plus n/2 x K per candidate rho, once per grid; the weights then serve any number of samples. What they gain
over Adams-Bashforth, per NFE and process, is measured in ``benchmarks/samplers.md``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.processes.base import Process
from diffusion.samplers import sample
from diffusion.samplers.common import alpha_sigma, model_time
from diffusion.samplers.grids import check_timesteps
from diffusion.samplers.ipndm import ADAMS_BASHFORTH

#: the ridge strengths tried on held-out draws (in units of the mean squared residual per row)
RIDGES = (1e-4, 1e-3, 1e-2, 1e-1)


@torch.no_grad()
def fit_coefficients(process: Process, model: Callable[..., Tensor], shape: tuple[int, ...],
                     timesteps: Sequence[float], generator: torch.Generator | None = None, n: int = 256,
                     order: int = 4, substeps: int = 20, ridges: Sequence[float] = RIDGES,
                     device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                     report: dict | None = None) -> list[list[float]]:
    """iPNDM weights for the grid ``timesteps`` (t_max first; steps + 1 times, ``ipndm``'s layout), fitted on ``n``
    draws of the prior of ``shape`` (a batch shape; its first entry is replaced by n): one list per step, newest
    evaluation first, min(order, i + 1) weights at step i. Pass them as ``ipndm(..., coefficients=...)``.
    ``report``, if given, receives the chosen ``ridge`` and the mean end distance from the reference on held-out
    draws: per ridge tried, and with Adams-Bashforth's weights (what the fit gained)."""
    if order not in ADAMS_BASHFORTH:
        raise ConfigError(f"order must be 1, 2, 3 or 4, got {order!r}")
    ts = check_timesteps(process, timesteps)
    if len(ts) < 2:
        raise ConfigError(f"fit_coefficients needs at least 2 timesteps, got {len(ts)}")
    if n < 4:
        raise ConfigError(f"fit_coefficients needs n >= 4 draws (half of them hold out the ridge), got {n}")
    gen_device = generator.device if generator is not None else device
    x_T = process.prior_sample((n,) + tuple(shape)[1:], generator, device=gen_device, dtype=dtype)
    x_T = x_T.to(device) if device is not None else x_T
    fine, marks = _substep_grid(process, ts, substeps)
    keep, states, calls = set(marks), {}, [0]

    def recorder(x: Tensor, t: Tensor, **kwargs) -> Tensor:  # dpmpp_3m calls the model once at each fine time
        if calls[0] in keep:
            states[calls[0]] = x
        calls[0] += 1
        return model(x, t, **kwargs)

    x_end = sample(process, recorder, None, "dpmpp_3m", x_T=x_T, timesteps=fine)
    assert calls[0] == len(fine) - 1, "the reference solver must call the model once per fine time"
    reference = [states[k] for k in marks[:-1]] + [x_end]  # x* at every grid time, only those kept
    held_out = {rho: held_out_error(process, model, ts, reference, order, rho, n) for rho in ridges}
    best = min(ridges, key=held_out.__getitem__)
    if report is not None:
        plain = [list(ADAMS_BASHFORTH[min(order, i + 1)]) for i in range(len(ts) - 1)]
        x = _walk(process, model, ts, reference, order, 0.0, slice(None), plain)[1]
        report.update(ridge=best, held_out_end_error={str(rho): err for rho, err in held_out.items()},
                      adams_bashforth_end_error=float((x - reference[-1].double()).flatten(1).norm(dim=1).mean()))
    return _walk(process, model, ts, reference, order, best, slice(None))[0]


def held_out_error(process: Process, model: Callable[..., Tensor], ts: Sequence[float], reference: Sequence[Tensor],
                   order: int, rho: float, n: int) -> float:
    """How well ridge ``rho`` generalises, two-fold: weights fitted on one half of the n draws walk the other half;
    the mean distance of its end states from ``reference[-1]``'s (``reference``: x* at every time of ``ts``),
    averaged over both folds. ``fit_coefficients`` chooses its ridge by it, and ``optimize_timesteps`` scores trial
    grids by it."""
    total = 0.0
    for fit, test in ((slice(None, n // 2), slice(n // 2, None)), (slice(n // 2, None), slice(None, n // 2))):
        weights = _walk(process, model, ts, reference, order, rho, fit)[0]
        x = _walk(process, model, ts, reference, order, rho, test, weights)[1]
        total += float((x - reference[-1][test].double()).flatten(1).norm(dim=1).mean()) / 2
    return total if math.isfinite(total) else math.inf


def _walk(process: Process, model, ts: list[float], reference: list[Tensor], order: int, rho: float, rows: slice,
          weights: list[list[float]] | None = None) -> tuple[list[list[float]], Tensor]:
    """Walk the grid from the reference's x_T[rows]; fit each step's weights on the way (``weights`` None) or use
    the given ones. Returns the weights and the end state (float64)."""
    alpha, sigma = zip(*(alpha_sigma(process, t) for t in ts))
    s = [sg / a for a, sg in zip(alpha, sigma)]
    x_T = reference[0][rows]
    y, history, fitted = x_T.double() / alpha[0], [], []
    for i in range(len(ts) - 1):
        eps = model((alpha[i] * y).to(x_T.dtype), model_time(ts[i], x_T)).double()
        history = [eps] + history[:order - 1]
        columns = torch.stack([h.flatten() for h in history], 1)  # (m, k)
        if weights is None:
            k = len(history)
            prior = torch.tensor(ADAMS_BASHFORTH[k], dtype=torch.float64)
            target = ((reference[i + 1][rows].double() / alpha[i + 1] - y) / (s[i + 1] - s[i])).flatten()
            lam = rho * columns.shape[0] * float(columns.pow(2).mean())
            c = torch.linalg.solve(columns.T @ columns + lam * torch.eye(k, dtype=torch.float64),
                                   columns.T @ target + lam * prior)
            fitted.append(c.tolist())
        c = torch.tensor((weights or fitted)[i], dtype=torch.float64)
        y = y + (s[i + 1] - s[i]) * (columns @ c).view_as(y)
    return (weights or fitted), alpha[-1] * y


def _substep_grid(process: Process, ts: list[float], substeps: int) -> tuple[list[float], list[int]]:
    """``ts`` with ``substeps`` - 1 times, uniform in log-SNR, inserted in each interval; and where each t of ts
    lies in it."""
    fine, marks = [ts[0]], [0]
    for a, b in zip(ts, ts[1:]):
        lam_a, lam_b = _log_snr(process, a), _log_snr(process, b)
        for k in range(1, substeps):
            fine.append(_time_at(process, lam_a + (lam_b - lam_a) * k / substeps, b, a))
        fine.append(b)
        marks.append(len(fine) - 1)
    return fine, marks


def _log_snr(process: Process, t: float) -> float:
    return float(process.log_snr(torch.tensor(t, dtype=torch.float64)))


def _time_at(process: Process, lam: float, lo: float, hi: float) -> float:
    """The time in (lo, hi) where the log-SNR (decreasing in t) equals ``lam``: bisection, to float64 resolution."""
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if _log_snr(process, mid) > lam:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


__all__ = ["fit_coefficients", "held_out_error", "RIDGES"]
