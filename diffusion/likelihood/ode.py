r"""Exact likelihood through the probability-flow ODE (Song et al. 2021, sec. 4.3 and appendix D.2).

Every process here has the probability-flow ODE

    dx/dt = h(x, t) = f(t) x - 1/2 g(t)^2 score(x, t),     score = -eps(x, t) / sigma(t),

whose flow carries p_{t_start} to p_{t_max}. Along a trajectory the log-density obeys the instantaneous
change of variables (Chen et al. 2018, "Neural ODEs", thm. 1):

    d log p_t(x_t) / dt = -div h(x_t, t) = -( f(t) d + g(t)^2 / (2 sigma(t)) div eps(x_t, t) ).

Integrating the augmented state (x, delta) with d delta/dt = div h from t_start to t_max gives

    log p_{t_start}(x) = log p_T(x_T) + delta(t_max),

with p_T the process's prior. The divergence is either exact (the trace of the d x d Jacobian, one
vector-Jacobian product per dimension, batched with vmap) or Hutchinson's estimate
E_v[v^T (d eps/dx) v] with Rademacher or Gaussian probes v that stay fixed along the whole trajectory
(Grathwohl et al. 2019, FFJORD), so each probe yields an unbiased estimate of log p.

The solver's clock is the process's ``ode_clock`` unless ``time_variable`` says otherwise: t for the SDEs and
lambda = log SNR for DDPM, where d/dlambda = (dt/dlambda) d/dt is smooth and DDPM's piecewise-constant beta is
not (``diffusion.probability_flow``, shared with the ODE sampler).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from torchdiffeq import odeint

from diffusion.probability_flow import CLOCKS, flow_coefficients, from_clock, to_clock
from diffusion.processes.base import Process
from diffusion.utils import append_dims

#: basis vectors per batched vector-Jacobian product in the exact trace (bounds memory to ~64 backward passes)
EXACT_CHUNK = 64
DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
TIME_VARIABLES = CLOCKS


def exact_divergence(out: Tensor, x: Tensor, chunk: int = EXACT_CHUNK) -> Tensor:
    """tr(d out / d x) per sample, shape (batch,): one vector-Jacobian product per basis vector e_i,
    each giving row i of every sample's Jacobian (samples are independent), ``chunk`` of them at once."""
    batch, d = x.shape[0], x[0].numel()
    trace = torch.zeros(batch, dtype=out.dtype, device=out.device)
    for start in range(0, d, chunk):
        idx = torch.arange(start, min(start + chunk, d), device=x.device)
        basis = torch.zeros(len(idx), batch, d, dtype=out.dtype, device=out.device)
        basis[torch.arange(len(idx), device=x.device), :, idx] = 1
        rows = _batched_vjp(out, x, basis.reshape((len(idx),) + out.shape))  # (chunk, batch, d)
        trace += rows.flatten(2)[torch.arange(len(idx), device=x.device), :, idx].sum(0)
    return trace


def hutchinson_divergence(out: Tensor, x: Tensor, v: Tensor) -> Tensor:
    """v^T (d out / d x) v per probe and sample, shape (probes, batch); v has shape (probes, *x.shape)."""
    return (_batched_vjp(out, x, v) * v).flatten(2).sum(-1)


def _batched_vjp(out: Tensor, x: Tensor, vs: Tensor) -> Tensor:
    """[v^T d out/d x for v in vs] stacked, shape (n, *x.shape). vmap over the backward pass where the
    network's ops support it; a plain loop otherwise."""
    if vs.shape[0] > 1:
        try:
            return torch.autograd.grad(out, x, vs, retain_graph=True, is_grads_batched=True)[0]
        except (RuntimeError, NotImplementedError):
            pass  # an op without a batching rule: fall back to one backward pass per vector
    return torch.stack([torch.autograd.grad(out, x, v, retain_graph=True)[0] for v in vs])


def draw_probes(shape: tuple[int, ...], probe: str, generator: torch.Generator | None, device, dtype) -> Tensor:
    """Hutchinson probes with E[v v^T] = I: Rademacher (+-1, the lower-variance choice) or standard Gaussian."""
    if probe == "rademacher":
        return torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1
    if probe == "gaussian":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    raise ValueError(f"unknown probe {probe!r}; choose one of {', '.join(PROBES)}")


def ode_nll(process: Process, model: Callable[[Tensor, Tensor], Tensor], x: Tensor, divergence: str = "exact",
            probes: int = 1, rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5",
            generator: torch.Generator | None = None, *, probe: str = "rademacher", t_start: float | None = None,
            return_stats: bool = False, time_variable: str | None = None, **odeint_options) -> Tensor | tuple[Tensor, dict]:
    r"""-log p_{t_start}(x) in nats per sample (summed over dimensions), shape (batch,).

    Integrates the probability-flow ODE and its divergence (module docstring) from ``t_start``
    (default ``process.t_eps``) to ``process.t_max`` with ``torchdiffeq.odeint(method, rtol, atol,
    **odeint_options)``, in the dtype of ``x`` on its device. ``model(x, t) -> eps`` with t of shape
    (batch,) in the process's own time (fractional step indices for DDPM: its continuous view).

    divergence: ``"exact"`` (trace of the Jacobian, d vector-Jacobian products per evaluation) or
    ``"hutchinson"`` (``probes`` probes of kind ``probe`` drawn once from ``generator``; the result is the
    mean of the per-probe estimates). With ``return_stats=True`` returns ``(nll, stats)``, stats =
    ``{"nfe": evaluations of the ODE right-hand side, "stderr": (batch,) standard error of the Hutchinson
    mean across probes (NaN for a single probe; zeros for the exact trace)}``. ``time_variable``: the
    solver's clock, ``"t"`` or ``"log_snr"`` (default: t for SDEs, log_snr for DDPM).
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)}")
    if not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be a positive integer, got {probes!r}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor (dequantize integer data first), got {x.dtype}")
    t0 = process.t_eps if t_start is None else float(t_start)
    t1 = process.t_max
    if not t0 < t1:
        raise ValueError(f"t_start={t0} must be below the process's t_max={t1}")

    batch, d, dtype = x.shape[0], x[0].numel(), x.dtype
    v = None
    if divergence == "hutchinson":
        v = draw_probes((probes,) + tuple(x.shape), probe, generator, x.device, dtype)
    nfe = 0

    # The solver's clock: t itself, or lambda = log SNR, in which the right-hand side is smooth for every
    # process. DDPM needs lambda: its piecewise-constant beta kinks the rhs at each integer t, which stalls
    # adaptive solvers (measured: 2e-3 nats/dim error at rtol=1e-5 in t, 6e-5 in lambda). For the SDEs t is
    # smooth and takes fewer evaluations at loose tolerances.
    clock = process.ode_clock if time_variable is None else time_variable
    if clock not in TIME_VARIABLES:
        raise ValueError(f"unknown time_variable {clock!r}; choose one of {', '.join(TIME_VARIABLES)}")
    ends = to_clock(process, torch.tensor([t0, t1], dtype=torch.float64), clock)
    if clock == "log_snr":
        if not torch.allclose(process.t_from_log_snr(ends), torch.tensor([t0, t1], dtype=torch.float64), rtol=1e-6, atol=1e-9):
            raise ValueError(f"t_start={t0} is outside the range where {process!r} inverts its log-SNR; use t_start >= process.t_eps")

    def dynamics(value: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        nonlocal nfe
        nfe += 1
        x_t = state[0]
        t = from_clock(process, value.reshape(1), clock).expand(batch)
        x_coef, eps_coef = flow_coefficients(process, t, clock)  # d x / d clock = x_coef x + eps_coef eps
        with torch.enable_grad():
            x_in = x_t.detach().requires_grad_(True)
            eps = model(x_in, t.to(dtype)).to(dtype)
            if v is None:
                div_eps = exact_divergence(eps, x_in)
            else:
                div_eps = hutchinson_divergence(eps, x_in, v)
        dx = append_dims(x_coef.to(dtype), x.ndim) * x_t + append_dims(eps_coef.to(dtype), x.ndim) * eps.detach()
        ddelta = (x_coef * d).to(dtype) + eps_coef.to(dtype) * div_eps.detach()
        return dx, ddelta

    delta0 = torch.zeros((batch,) if v is None else (probes, batch), dtype=dtype, device=x.device)
    ends = ends.to(device=x.device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    with torch.no_grad():
        xs, deltas = odeint(dynamics, (x, delta0), ends, rtol=rtol, atol=atol, method=method, **odeint_options)
    x_T, delta_T = xs[-1], deltas[-1]
    nll_per = -(process.prior_log_prob(x_T) + delta_T)  # (batch,) or (probes, batch)
    if v is None:
        nll, stderr = nll_per, torch.zeros_like(nll_per)
    else:
        nll = nll_per.mean(0)
        stderr = nll_per.std(0) / math.sqrt(probes) if probes > 1 else torch.full_like(nll, float("nan"))
    if return_stats:
        return nll, {"nfe": nfe, "stderr": stderr}
    return nll
