r"""EDM's second-order sampler (Karras et al. 2022, algorithm 2), on every process.

Any process here is a scaled EDM process: with x_hat = x / alpha(t) and sigma_hat = sigma(t) / alpha(t)
(EDM eq. 4 with s(t) = alpha(t)), x_hat = x_0 + sigma_hat eps and the probability-flow ODE becomes

    d x_hat / d sigma_hat = (x_hat - D(x_hat; sigma_hat)) / sigma_hat = eps(x, t),

the model's own eps at x = alpha(t) x_hat. The sampler walks the process's grid t_0 = t_max > ... > t_{N-1} =
t_min (``spacing``; ``default`` is the process's own, Karras's rho-spaced sigmas for EDM) and then sigma = 0:

    churn:  gamma_i = min(S_churn / N, sqrt(2) - 1) if S_tmin <= sigma_i <= S_tmax else 0,
            sigma_up = sigma_i (1 + gamma_i),  x_up = x_i + sqrt(sigma_up^2 - sigma_i^2) S_noise z,
    Euler:  x_{i+1} = x_up + (sigma_{i+1} - sigma_up) d,           d = eps(x_up, sigma_up),
    Heun:   x_{i+1} = x_up + (sigma_{i+1} - sigma_up) (d + d') / 2,  d' = eps(x_{i+1}, sigma_{i+1}),

the Heun correction skipped on the last step (sigma_{N} = 0, where it would divide by zero): NFE = 2 steps - 1.
S_churn = 0 (default) is deterministic. S_tmin, S_tmax are in sigma_hat = sigma / alpha (EDM's sigma). The churned
level sigma_up is capped at sigma_hat(t_max), the largest noise level every process here defines (rectified flow's
coefficients stop at t_max, DDPM's at step N-1); the time of sigma_up comes from ``process.t_from_log_snr``. The
cap departs from EDM's algorithm only at the first step and only when S_tmax >= sigma_max (EDM's own stochastic
settings use S_tmax = 50 < 80), where EDM would churn above sigma_max.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import trange

from diffusion.errors import ConfigError
from diffusion.processes.base import Process
from diffusion.samplers.registry import register_sampler
from diffusion.samplers.common import EpsFn, alpha_sigma, model_time, noise_like, t64
from diffusion.samplers.grids import Timesteps, grid


@register_sampler()
def heun(process: Process, model: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None = None,
         progress: bool = False, *, S_churn: float = 0.0, S_tmin: float = 0.0, S_tmax: float = float("inf"),
         S_noise: float = 1.0, spacing: str = "default", timesteps: Timesteps = None) -> Tensor:
    """EDM algorithm 2 over ``process.timesteps(steps, spacing)`` (or explicit ``timesteps``) then sigma = 0;
    NFE = 2 steps - 1."""
    if S_churn < 0 or S_noise < 0 or S_tmin > S_tmax:
        raise ConfigError(f"need S_churn >= 0, S_noise >= 0 and S_tmin <= S_tmax, "
                         f"got S_churn={S_churn}, S_noise={S_noise}, S_tmin={S_tmin}, S_tmax={S_tmax}")
    ts = grid(process, steps, spacing, timesteps)
    alpha, sigma = alpha_sigma(process, ts[0])
    x_hat, sigma_top = x / alpha, sigma / alpha

    def eps_at(x_hat: Tensor, t: float) -> Tensor:
        a, _ = alpha_sigma(process, t)
        return model(a * x_hat, model_time(t, x_hat)).to(x_hat.dtype)

    for i in trange(len(ts), disable=not progress, desc="heun"):
        t = ts[i]
        alpha, sigma = alpha_sigma(process, t)
        level = sigma / alpha
        gamma = min(S_churn / len(ts), math.sqrt(2) - 1) if S_tmin <= level <= S_tmax else 0.0
        level_up = min(level * (1 + gamma), sigma_top)
        if level_up > level:
            t = float(process.t_from_log_snr(t64(-2 * math.log(level_up))))
            x_hat = x_hat + math.sqrt(level_up**2 - level**2) * S_noise * noise_like(x_hat, generator)
        d = eps_at(x_hat, t)
        if i + 1 == len(ts):  # Euler to sigma = 0: x_hat - sigma_up eps, the denoised estimate
            return x_hat - level_up * d
        alpha_next, sigma_next = alpha_sigma(process, ts[i + 1])
        level_next = sigma_next / alpha_next
        x_next = x_hat + (level_next - level_up) * d
        x_hat = x_hat + (level_next - level_up) * (d + eps_at(x_next, ts[i + 1])) / 2
    return x_hat  # not reached: the last grid time returns above


__all__ = ["heun"]
