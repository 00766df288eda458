r"""Bits per dimension for 8-bit data, and uniform dequantization.

Pixels are integers k in {0, ..., 255}. Uniform dequantization (Theis et al. 2016) adds u ~ U[0, 1)^d,
y = k + u in [0, 256)^d; a continuous density p_y then bounds the discrete likelihood,
log P(k) >= E_u log p_y(k + u). Models see x = 2y/256 - 1 = y/128 - 1 in [-1, 1), so dx/dy = 1/128 per
dimension and by the change of variables

    -log p_y(y) = -log p_x(x) - d log(1/128) = nll_x + d log 128,

    bits/dim = (nll_x + d log 128) / (d ln 2)          (= 7 + nll_x / (d ln 2)).

Check: a density uniform on [-1, 1]^d has nll_x = d log 2, hence 1 + 7 = 8 bits/dim, the entropy of
uniform bytes.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def dequantize(x_uint8: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """x = 2 (k + u) / 256 - 1 with u ~ U[0, 1) per dimension: float32 in [-1, 1)."""
    if x_uint8.is_floating_point() or x_uint8.dtype == torch.bool:
        raise ValueError(f"dequantize takes integer pixel values 0..255 (e.g. uint8), got {x_uint8.dtype}; "
                         "pass the raw bytes, not data already scaled to [-1, 1]")
    if x_uint8.numel() and (int(x_uint8.min()) < 0 or int(x_uint8.max()) > 255):
        raise ValueError("dequantize takes pixel values in 0..255")
    u = torch.rand(x_uint8.shape, generator=generator, device=x_uint8.device)
    return 2 * (x_uint8.float() + u) / 256 - 1


def bits_per_dim(nll_nats: Tensor | float, dims: int) -> Tensor | float:
    """Bits/dim of 8-bit data from a per-sample NLL (nats) of x in [-1, 1]: (nll + dims log 128)/(dims ln 2)."""
    if dims < 1:
        raise ValueError(f"dims must be positive, got {dims}")
    return (nll_nats + dims * math.log(128)) / (dims * math.log(2))
