r"""Interpolation through the probability-flow ODE (Song et al. 2021, sec. 4.3 "manipulating latent representations").

The ODE is a bijection between data at t_min and latents at t_max whose law is the prior N(0, s^2 I). Two images
are encoded, their latents joined by spherical interpolation (Shoemake 1985; the usual choice for Gaussian
latents, White 2016), which keeps the norm near that of a typical prior draw where a straight line would pass
through the low-norm, atypical centre of the Gaussian shell,

    slerp(z_0, z_1; u) = sin((1 - u) theta) / sin(theta) z_0 + sin(u theta) / sin(theta) z_1,   cos(theta) = <z_0, z_1> / (|z_0| |z_1|),

and every latent on the arc is decoded. The decoded path starts and ends at the two images (decode(encode(x)) = x
up to the ODE tolerances) and stays where the data density is high.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.processes.base import Process
from diffusion.samplers.ode import decode, encode


def slerp(z0: Tensor, z1: Tensor, u: Tensor) -> Tensor:
    """Spherical interpolation between two tensors of the same shape at fractions ``u`` (n,): shape (n, *z0.shape).
    Falls back to the straight line when z0 and z1 are (nearly) parallel."""
    a, b = z0.reshape(-1).double(), z1.reshape(-1).double()
    u = torch.as_tensor(u, dtype=torch.float64).reshape(-1, 1)
    cos = torch.dot(a, b) / (a.norm() * b.norm())
    theta = torch.arccos(cos.clamp(-1, 1))
    if float(theta.sin()) < 1e-6:
        path = (1 - u) * a + u * b
    else:
        path = (torch.sin((1 - u) * theta) * a + torch.sin(u * theta) * b) / theta.sin()
    return path.to(z0.dtype).reshape((-1,) + tuple(z0.shape))


@torch.no_grad()
def interpolate(process: Process, model: Callable[..., Tensor], x0: Tensor, x1: Tensor, frames: int = 8,
                rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5") -> Tensor:
    """``frames`` points (frames, *x0.shape) from x0 to x1: decode(slerp(encode(x0), encode(x1))); the first and
    last are decode(encode(x0)) and decode(encode(x1)). x0, x1: single samples without a batch dimension."""
    if x0.shape != x1.shape:
        raise ConfigError(f"the two images differ in shape: {tuple(x0.shape)} and {tuple(x1.shape)}")
    if int(frames) != frames or frames < 2:
        raise ConfigError(f"frames must be an integer >= 2, got {frames}")
    z = encode(process, model, torch.stack([x0, x1]), rtol=rtol, atol=atol, method=method)
    path = slerp(z[0], z[1], torch.linspace(0, 1, int(frames), dtype=torch.float64))
    return decode(process, model, path, rtol=rtol, atol=atol, method=method)


__all__ = ["slerp", "interpolate"]
