r"""Embeddings of the noise level: the scalar a network is conditioned on.

The network sees ``process.noise_label(t)``: the DDPM step index (or 999 t for VP / sub-VP), or log sigma
for VE. Two fixed feature maps turn that scalar into a vector of ``dim`` features:

* ``SinusoidalEmbedding`` -- the transformer position encoding (Vaswani et al. 2017) used by DDPM
  (Ho et al. 2020):  [cos(w_i s), sin(w_i s)],  w_i = 10000^(-i / (dim/2)),  i = 0 .. dim/2 - 1.
  Suited to labels spread over [0, 1000).
* ``FourierEmbedding`` -- random Fourier features (Tancik et al. 2020) as in NCSN++ (Song et al. 2021):
  [cos(2 pi w_i s), sin(2 pi w_i s)],  w_i ~ N(0, scale^2), scale = 16, fixed (not trained).
  Suited to log sigma, which spans only about [-5, 4].
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

EMBEDDINGS = ("sinusoidal", "fourier")


class SinusoidalEmbedding(nn.Module):
    """Transformer sinusoid of a scalar per sample: (batch,) -> (batch, dim).

    Two variants of the published networks (diffusers' ``flip_sin_to_cos`` and ``freq_shift``):
    w_i = max_period^(-i / (dim/2 - freq_shift)) -- DDPM's TensorFlow code divides by dim/2 - 1 -- and the
    features [cos, sin] (``cos_first``, as ADM) or [sin, cos] (DDPM).
    """

    def __init__(self, dim: int, max_period: float = 10000.0, cos_first: bool = True, freq_shift: float = 0.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"sinusoidal embedding needs an even dim, got {dim}")
        half = dim // 2
        if half - freq_shift <= 0:
            raise ValueError(f"freq_shift={freq_shift} must stay below dim/2 = {half}")
        self.cos_first = cos_first
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / (half - freq_shift))
        self.register_buffer("freqs", freqs.float(), persistent=False)

    def forward(self, s: Tensor) -> Tensor:
        angles = s.float()[:, None] * self.freqs[None, :]
        if self.cos_first:
            return torch.cat([angles.cos(), angles.sin()], dim=1)
        return torch.cat([angles.sin(), angles.cos()], dim=1)


class FourierEmbedding(nn.Module):
    """Fixed random Gaussian Fourier features of a scalar per sample: (batch,) -> (batch, dim).

    The frequencies are drawn once from a generator seeded with ``seed`` (never the global RNG) and are
    saved with the model, so a checkpoint reproduces the same features.
    """

    def __init__(self, dim: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"Fourier embedding needs an even dim, got {dim}")
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(dim // 2, generator=generator) * scale)

    def forward(self, s: Tensor) -> Tensor:
        angles = 2 * math.pi * s.float()[:, None] * self.freqs[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=1)


def noise_embedding(kind: str, dim: int, cos_first: bool = True, freq_shift: float = 0.0) -> nn.Module:
    if kind == "sinusoidal":
        return SinusoidalEmbedding(dim, cos_first=cos_first, freq_shift=freq_shift)
    if kind == "fourier":
        return FourierEmbedding(dim)
    raise ValueError(f"unknown embedding {kind!r}; choose one of {', '.join(EMBEDDINGS)}")
