r"""EDM preconditioning (Karras et al. 2022, table 1 and sec. 5), a thin wrapper usable under every process.

Any process x_t = alpha x_0 + sigma eps is EDM's x_hat = x_0 + sigma_hat eps after scaling, with
x_hat = x_t / alpha and sigma_hat = sigma / alpha. EDM's denoiser wraps the raw network F:

    D(x_hat; sigma_hat) = c_skip x_hat + c_out F(c_in x_hat; c_noise),
    c_skip = sigma_data^2 / (sigma_hat^2 + sigma_data^2),    c_out = sigma_hat sigma_data / sqrt(sigma_hat^2 + sigma_data^2),
    c_in   = 1 / sqrt(sigma_hat^2 + sigma_data^2),           c_noise = ln(sigma_hat) / 4,

chosen so that the network's input and its regression target (x_0 - c_skip x_hat) / c_out both have unit
variance for data of std sigma_data, and so that EDM's loss weight lambda(sigma) = 1 / c_out^2 makes the loss
a plain |F - target|^2 (``losses.EDMLoss``). Samplers see eps = (x_hat - D) / sigma_hat.

sigma_data comes from the process (``EDM(sigma_data=...)``) and is 0.5 (EDM's value for images in [-1, 1])
under the others, so the conversions below, the wrapper and the losses always agree on it.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from diffusion.processes.base import Process
from diffusion.utils import append_dims

#: sigma_data of processes that do not set one (EDM's value for images scaled to [-1, 1])
SIGMA_DATA = 0.5


def sigma_data(process: Process) -> float:
    return float(getattr(process, "sigma_data", SIGMA_DATA))


def edm_coefficients(process: Process, t: Tensor) -> dict[str, Tensor]:
    """alpha, sigma_hat = sigma/alpha and EDM's c_skip, c_out, c_in (on x_hat), c_noise at t, float64, shape of t."""
    t = t.double()
    alpha, sigma = process.log_alpha(t).exp(), process.sigma2(t).clamp_min(0).sqrt()
    level, sd = sigma / alpha, sigma_data(process)
    root = (level**2 + sd**2).sqrt()
    return {"alpha": alpha, "sigma_hat": level, "c_skip": sd**2 / root**2, "c_out": level * sd / root,
            "c_in": 1 / root, "c_noise": 0.25 * level.clamp_min(1e-20).log()}


def _per_sample(process: Process, t: Tensor, x: Tensor) -> dict[str, Tensor]:
    coefs = edm_coefficients(process, t.reshape(-1).expand(x.shape[0]))
    return {k: append_dims(v.to(x.dtype), x.ndim) for k, v in coefs.items()}


def edm_to_eps(process: Process, x: Tensor, t: Tensor, out: Tensor) -> Tensor:
    """eps from the raw network output F: D = c_skip x_hat + c_out F, eps = (x_hat - D) / sigma_hat."""
    c = _per_sample(process, t, x)
    x_hat = x / c["alpha"]
    return (x_hat - c["c_skip"] * x_hat - c["c_out"] * out) / c["sigma_hat"]


def eps_to_edm(process: Process, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """The raw network's target for eps: F = (x0 - c_skip x_hat) / c_out with x0 = x_hat - sigma_hat eps."""
    c = _per_sample(process, t, x)
    x_hat = x / c["alpha"]
    return (x_hat - c["sigma_hat"] * eps - c["c_skip"] * x_hat) / c["c_out"]


class EDMPrecond(nn.Module):
    """``model(x, t) -> eps`` around a raw network ``net(x_in, c_noise, class_labels=None)`` with EDM's
    preconditioning (module docstring); ``raw(x, t)`` is F itself, ``denoise(x, t)`` is D in x_0 units.
    Drop-in for ``parameterization.EpsModel`` (``prediction == "edm"``)."""

    prediction = "edm"

    def __init__(self, net: nn.Module, process: Process):
        super().__init__()
        self.net, self.process = net, process

    def raw(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        c = _per_sample(self.process, t, x)
        x_in = c["c_in"] * x / c["alpha"]
        label = c["c_noise"].reshape(-1).to(torch.float32)
        if class_labels is None:
            return self.net(x_in, label)
        return self.net(x_in, label, class_labels=class_labels)

    def denoise(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        c = _per_sample(self.process, t, x)
        x_hat = x / c["alpha"]
        return c["c_skip"] * x_hat + c["c_out"] * self.raw(x, t, class_labels).to(x.dtype)

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        return edm_to_eps(self.process, x, t, self.raw(x, t, class_labels).to(x.dtype))


__all__ = ["EDMPrecond", "edm_coefficients", "edm_to_eps", "eps_to_edm", "sigma_data", "SIGMA_DATA"]
