r"""Variance-preserving and sub-VP SDEs (Song et al. 2021, sec. 3.4 and appendix B).

VP:      dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW,            beta(t) = beta_min + t (beta_max - beta_min)
         alpha(t) = exp(-B(t)/2),  sigma(t)^2 = 1 - exp(-B(t)),  B(t) = int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2
sub-VP:  dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - exp(-2 B(t)))) dW
         alpha(t) = exp(-B(t)/2),  sigma(t) = 1 - exp(-B(t))     (its variance is bounded by the VP one)

VP is the continuous limit of DDPM with beta_i = beta(i/N)/N (Song et al. appendix B).
"""
from __future__ import annotations


import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.processes.base import Process


class VPSDE(Process):
    name = "vpsde"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3, t_eps: float = 1e-5):
        if not 0 <= beta_min < beta_max:
            raise ConfigError(f"need 0 <= beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.t_min, self.t_eps = float(t_min), float(t_eps)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def B(self, t: Tensor) -> Tensor:
        """B(t) = int_0^t beta(s) ds. Clamped at t=0 so that stages an adaptive solver puts
        before 0 stay finite (sigma would turn imaginary)."""
        t = t.clamp_min(0)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def log_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * self.B(t)

    def sigma2(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self.B(t))

    def f_coef(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t.clamp_min(0))

    def g2(self, t: Tensor) -> Tensor:
        return self.beta(t.clamp_min(0))

    def noise_label(self, t: Tensor) -> Tensor:
        # the DDPM-equivalent step index, so one network embedding serves DDPM and VP alike
        return 999.0 * t

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        # lambda = -log(e^B - 1)  =>  B = softplus(-lambda); solve the quadratic B(t) = B for t >= 0
        B = torch.nn.functional.softplus(-lam.double())
        a, b = 0.5 * (self.beta_max - self.beta_min), self.beta_min
        return 2 * B / (b + torch.sqrt(b * b + 4 * a * B))

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max})"


class SubVPSDE(VPSDE):
    name = "subvpsde"

    def sigma2(self, t: Tensor) -> Tensor:
        return torch.expm1(-self.B(t)) ** 2

    def g2(self, t: Tensor) -> Tensor:
        return self.beta(t.clamp_min(0)) * -torch.expm1(-2 * self.B(t))

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        return Process.t_from_log_snr(self, lam)

    def __repr__(self) -> str:
        return f"SubVPSDE(beta_min={self.beta_min}, beta_max={self.beta_max})"


__all__ = ["VPSDE", "SubVPSDE"]
