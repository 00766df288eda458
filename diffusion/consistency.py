r"""The consistency-model parameterization (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", eq. 5), a
thin wrapper like EDM's preconditioning: a consistency function maps every point of a probability-flow ODE
trajectory to its end at t_min, and is parameterized so that the boundary condition holds for any weights.

With s = sigma / alpha (EDM's sigma_hat) and the wrapped model's denoiser D = x0_pred (in place of the paper's raw
F, so that a student built on a trained diffusion model starts as its denoiser):

    f(x, t) = c_skip(s) x + (1 - c_skip(s)) D(x, t),   c_skip(s) = sigma_data^2 / ((s - s_min)^2 + sigma_data^2).

At t_min, c_skip = 1 exactly: f(x, t_min) = x. ``ConsistencyModel`` exposes f through the eps interface every
sampler and loss uses, eps = (x / alpha - f) / s, so x0_pred of the wrapped model *is* f. Trained by
``diffusion.distillation`` (``train.py distill=consistency``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from diffusion.preconditioning import sigma_data as process_sigma_data
from diffusion.processes.base import Process
from diffusion.utils import append_dims


def alpha_and_level(process: Process, t: Tensor) -> tuple[Tensor, Tensor]:
    """alpha(t) and s(t) = sigma(t) / alpha(t), float64, shape of t."""
    t = t.double()
    alpha = process.log_alpha(t).exp()
    return alpha, process.sigma2(t).clamp_min(0).sqrt() / alpha


class ConsistencyModel(nn.Module):
    """``model(x, t) -> eps`` whose denoiser is the consistency function f = c_skip x + (1 - c_skip) D_inner
    (module docstring), around an eps model ``inner`` (``EpsModel`` or ``EDMPrecond``). ``denoise(x, t)`` is f;
    ``net`` is the inner network (checkpoints, EMA and guidance look it up)."""

    def __init__(self, inner: nn.Module, process: Process, sigma_data: float | None = None):
        super().__init__()
        self.inner, self.process = inner, process
        self.sigma_data = float(process_sigma_data(process) if sigma_data is None else sigma_data)
        self.s_min = float(alpha_and_level(process, torch.tensor(process.t_min))[1])

    @property
    def net(self) -> nn.Module:
        return self.inner.net

    @property
    def prediction(self) -> str:
        return self.inner.prediction

    def c_skip(self, t: Tensor) -> Tensor:
        """sigma_data^2 / ((s - s_min)^2 + sigma_data^2), float64: 1 at t_min, -> 0 at high noise."""
        s = alpha_and_level(self.process, t)[1]
        return self.sigma_data**2 / ((s - self.s_min) ** 2 + self.sigma_data**2)

    def raw(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        return self.inner.raw(x, t, class_labels)

    def denoise(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """f(x, t) = c_skip x + (1 - c_skip) x0_pred_inner(x, t)."""
        t = t.reshape(-1).expand(x.shape[0])
        alpha, s = (append_dims(c.to(x.dtype), x.ndim) for c in alpha_and_level(self.process, t))
        eps = self.inner(x, t, class_labels).to(x.dtype)
        x0_pred = x / alpha - s * eps
        c_skip = append_dims(self.c_skip(t).to(x.dtype), x.ndim)
        return c_skip * x + (1 - c_skip) * x0_pred

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """The eps that f implies: eps = (x / alpha - f) / s, so that x0_pred = x / alpha - s eps = f."""
        t = t.reshape(-1).expand(x.shape[0])
        alpha, s = (append_dims(c.to(x.dtype), x.ndim) for c in alpha_and_level(self.process, t))
        return (x / alpha - self.denoise(x, t, class_labels)) / s



__all__ = ["ConsistencyModel", "alpha_and_level"]
