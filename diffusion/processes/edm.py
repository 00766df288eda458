r"""The EDM process (Karras, Aittala, Aila & Laine 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", table 1 and sec. 5): time is the noise level itself.

    x_t = x_0 + t eps,   alpha(t) = 1,  sigma(t) = t,   f = 0,   g(t)^2 = d sigma^2/dt = 2t,   prior N(0, sigma_max^2 I).

The probability-flow ODE is then dx/dt = -t score = eps(x, t) (EDM eq. 4 with s = 1, sigma(t) = t), so an
Euler step is x - (t - s) eps. Training draws log sigma ~ N(p_mean, p_std^2) (EDM sec. 5, "P_mean, P_std"),
not clipped to [sigma_min, sigma_max]: the network sees the noise levels where the loss is largest. Sampling
walks Karras's grid (EDM eq. 5)

    sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,

here ``timesteps(steps)`` with the default spacing, which resolves to ``karras`` with this process's rho.
The network's noise label is EDM's c_noise = ln(sigma) / 4. Likelihoods start at t_eps = sigma_min.
"""
from __future__ import annotations


import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.processes.base import Process


class EDM(Process):
    name = "edm"
    default_loss = "edm"
    default_spacing = "karras"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, sigma_data: float = 0.5, rho: float = 7.0,
                 p_mean: float = -1.2, p_std: float = 1.2):
        if not 0 < sigma_min < sigma_max:
            raise ConfigError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        if sigma_data <= 0 or rho <= 0 or p_std <= 0:
            raise ConfigError(f"need sigma_data, rho and p_std > 0, got sigma_data={sigma_data}, rho={rho}, p_std={p_std}")
        self.sigma_min, self.sigma_max, self.sigma_data = float(sigma_min), float(sigma_max), float(sigma_data)
        self.rho, self.p_mean, self.p_std = float(rho), float(p_mean), float(p_std)
        self.t_min = self.t_eps = self.sigma_min
        self.t_max = self.sigma_max

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def sigma2(self, t: Tensor) -> Tensor:
        # clamped at 0 so that stages an adaptive solver puts before t = 0 keep sigma >= 0 and g^2 >= 0
        return t.clamp_min(0) ** 2

    def f_coef(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def g2(self, t: Tensor) -> Tensor:
        return 2 * t.clamp_min(0)

    def prior_std(self) -> float:
        return self.sigma_max

    def noise_label(self, t: Tensor) -> Tensor:
        # EDM table 1: c_noise = ln(sigma) / 4
        dtype = t.dtype if t.is_floating_point() else torch.float32
        return (0.25 * t.double().clamp_min(1e-20).log()).to(dtype)

    def sample_t(self, batch: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """sigma = exp(p_mean + p_std n), n ~ N(0, 1) (EDM sec. 5), float32, shape (batch,)."""
        n = torch.randn(batch, generator=generator, device=device)
        return (self.p_mean + self.p_std * n).exp()

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        # lambda = -2 log sigma
        return torch.exp(-0.5 * lam.double())

    def timesteps(self, steps: int, spacing: str = "default", rho: float | None = None,
                  t_min: float | None = None) -> Tensor:
        """As ``Process.timesteps``, with this process's rho for the karras grid (its default)."""
        return super().timesteps(steps, spacing, self.rho if rho is None else rho, t_min)

    def __repr__(self) -> str:
        return (f"EDM(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, sigma_data={self.sigma_data}, "
                f"rho={self.rho}, p_mean={self.p_mean}, p_std={self.p_std})")


__all__ = ["EDM"]
