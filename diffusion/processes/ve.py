r"""Variance-exploding SDE (Song et al. 2021, sec. 3.4; the continuous limit of NCSN / SMLD).

    dx = sqrt(d sigma^2/dt) dW,   sigma(t) = sigma_min (sigma_max / sigma_min)^t,
    alpha(t) = 1,  g(t)^2 = 2 log(sigma_max / sigma_min) sigma(t)^2,  prior N(0, sigma_max^2 I).

As in Song et al., sigma(0) = sigma_min rather than 0: the data are never seen noise-free.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.processes.base import Process


class VESDE(Process):
    name = "vesde"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-5, t_eps: float = 1e-5):
        if not 0 < sigma_min < sigma_max:
            raise ConfigError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.log_ratio = math.log(self.sigma_max / self.sigma_min)
        self.t_min, self.t_eps = float(t_min), float(t_eps)

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def sigma2(self, t: Tensor) -> Tensor:
        return (self.sigma_min**2) * torch.exp(2 * self.log_ratio * t)

    def f_coef(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def g2(self, t: Tensor) -> Tensor:
        return 2 * self.log_ratio * self.sigma2(t)

    def prior_std(self) -> float:
        return self.sigma_max

    def noise_label(self, t: Tensor) -> Tensor:
        # NCSN++ conditions on log sigma (through random Fourier features)
        return 0.5 * self.sigma2(t.double()).log().to(t.dtype if t.is_floating_point() else torch.float32)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        # lambda = -2 log sigma(t)
        return (-0.5 * lam.double() - math.log(self.sigma_min)) / self.log_ratio

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"
