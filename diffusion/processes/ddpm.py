r"""DDPM (Ho et al. 2020) with linear or cosine (Nichol & Dhariwal 2021) beta schedules.

Time is the step index t in {0, ..., N-1}; x_{-1} (t = -1) denotes the clean data:

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I),
    q(x_t | x_0)     = N(sqrt(abar_t) x_0, (1 - abar_t) I),   abar_t = prod_{i<=t} (1 - beta_i).

So alpha(t) = sqrt(abar_t) and sigma(t) = sqrt(1 - abar_t).

**The posterior by Bayes' rule.** For s < t (s = t - 1 for the original chain; any s for a respaced one),
write alpha_{t|s} = alpha_t / alpha_s and sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2
(for s = t-1 these are sqrt(1 - beta_t) and beta_t). Then

    q(x_s | x_t, x_0)  ∝  q(x_t | x_s) q(x_s | x_0)
                       =  N(x_t; alpha_{t|s} x_s, sigma_{t|s}^2) N(x_s; alpha_s x_0, sigma_s^2)
    precision:  1/var  = alpha_{t|s}^2 / sigma_{t|s}^2 + 1 / sigma_s^2 = sigma_t^2 / (sigma_{t|s}^2 sigma_s^2)
    mean:              = var (alpha_{t|s} x_t / sigma_{t|s}^2 + alpha_s x_0 / sigma_s^2)
                       = (alpha_s sigma_{t|s}^2 / sigma_t^2) x_0 + (alpha_{t|s} sigma_s^2 / sigma_t^2) x_t,
    var = beta_tilde   = sigma_{t|s}^2 sigma_s^2 / sigma_t^2        (= (1 - abar_{t-1}) / (1 - abar_t) beta_t).

Replacing x_0 by the network's estimate x0_pred(x_t) gives the reverse step p(x_s | x_t) ("DDPM = Bayes +
denoising"). The same coefficients hold for any Gaussian process, so they live in ``Process.posterior``.

**Continuous-time view.** log abar is interpolated linearly in t between the integer steps (with
log abar_{-1} = 0), so alpha and sigma are exact at every integer t and the process is the VP SDE
dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW with the piecewise-constant rate beta(t) = -log(1 - beta_i)
on (i-1, i]. Continuous samplers and the ODE likelihood therefore run on a DDPM model, calling it at
fractional step indices.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.processes.base import MARKOV_CHAIN, Process


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Ho et al. 2020; rescaled by 1000/N (Nichol & Dhariwal 2021) so that other N keep the same abar curve."""
    scale = 1000.0 / num_steps
    return torch.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=torch.float64)


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal 2021 eq. 17: abar(t) = cos^2(((t/N + s)/(1 + s)) pi/2) / cos^2(s/(1+s) pi/2)."""
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    fbar = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - fbar[1:] / fbar[:-1]).clamp(max=max_beta)


SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}


class DDPM(Process):
    name = "ddpm"
    offers = frozenset({MARKOV_CHAIN})
    ode_clock = "log_snr"  # beta(t) is piecewise constant: f and g^2 jump at every integer t (probability_flow.py)

    def __init__(self, schedule: str = "linear", num_steps: int = 1000, betas: Tensor | None = None):
        if betas is None:
            if schedule not in SCHEDULES:
                raise ConfigError(f"unknown DDPM schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
            if num_steps < 1:
                raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
            betas = SCHEDULES[schedule](num_steps)
        self.schedule = schedule
        self.betas = torch.as_tensor(betas, dtype=torch.float64)
        self.num_steps = len(self.betas)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, 0)
        # log abar on the grid t = -1, 0, ..., N-1, and its slope on each unit interval (i-1, i]
        self._log_abar = torch.cat([torch.zeros(1, dtype=torch.float64), torch.log1p(-self.betas).cumsum(0)])
        self._slope = torch.log1p(-self.betas)
        self.t_max = float(self.num_steps - 1)
        self.t_min = 0.0
        self.t_eps = 0.0

    def _segment(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Index i of the interval (i-1, i] holding t, clamped to the schedule, and t itself clamped
        below at -1 (where sigma = 0): stages an adaptive solver puts outside stay finite."""
        t = t.clamp_min(-1.0)
        i = torch.ceil(t).clamp(0, self.num_steps - 1).long()
        return i, t

    def log_alpha(self, t: Tensor) -> Tensor:
        i, t = self._segment(t.double())
        log_abar = self._log_abar.to(t.device)[i] + self._slope.to(t.device)[i] * (t - (i - 1))
        return 0.5 * log_abar

    def sigma2(self, t: Tensor) -> Tensor:
        return -torch.expm1(2 * self.log_alpha(t))

    def f_coef(self, t: Tensor) -> Tensor:
        i, _ = self._segment(t.double())
        return 0.5 * self._slope.to(t.device)[i]

    def g2(self, t: Tensor) -> Tensor:
        i, _ = self._segment(t.double())
        return -self._slope.to(t.device)[i]

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """Closed form: abar = sigmoid(lambda), then invert the piecewise-linear log abar(t) on its segment."""
        target = torch.nn.functional.logsigmoid(lam.double())
        grid = self._log_abar.to(target.device)  # decreasing, at t = -1, 0, ..., N-1
        # segment (i-1, i] holds the target where grid[i] >= target > grid[i+1]
        i = torch.searchsorted(-grid, -target.contiguous(), right=False).clamp(1, self.num_steps) - 1
        slope = self._slope.to(target.device)[i]
        return (i - 1) + (target - grid[i]) / slope

    def sample_t(self, batch: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """Training times: a uniform step index in {0, ..., N-1}, as float."""
        return torch.randint(0, self.num_steps, (batch,), generator=generator, device=device).float()

    def timesteps(self, steps: int, spacing: str = "uniform", rho: float = 7.0, t_min: float | None = None) -> Tensor:
        """As ``Process.timesteps``; ``uniform`` and ``quadratic`` grids are rounded to whole step indices
        (the indices the network was trained on), ``logsnr`` and ``karras`` stay fractional."""
        if spacing == "default":
            spacing = self.default_spacing
        if spacing in ("uniform", "quadratic"):
            if steps > self.num_steps:
                raise ConfigError(f"{steps} steps exceed the process's num_steps={self.num_steps}; use steps <= {self.num_steps}")
            t = super().timesteps(steps, spacing, rho, t_min).round()
            if len(t.unique()) != len(t):
                raise ConfigError(f"{steps} {spacing} steps repeat a step index of the N={self.num_steps} schedule; use fewer steps or spacing=uniform")
            return t
        return super().timesteps(steps, spacing, rho, t_min)

    def __repr__(self) -> str:
        return f"DDPM(schedule={self.schedule!r}, num_steps={self.num_steps})"
