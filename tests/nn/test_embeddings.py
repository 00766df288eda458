"""Noise-level embeddings against their closed forms."""
from __future__ import annotations

import math

import pytest
import torch

from diffusion.nn.embeddings import FourierEmbedding, SinusoidalEmbedding


def test_sinusoidal_is_the_transformer_encoding():
    dim, s = 8, torch.tensor([0.0, 1.0, 999.0])
    emb = SinusoidalEmbedding(dim)(s)
    half = dim // 2
    for b, value in enumerate(s.tolist()):
        for i in range(half):
            w = 10000 ** (-i / half)
            # float32 angles up to 999 rad: absolute rounding ~ 999 * 2^-24 ~ 6e-5
            assert emb[b, i].item() == pytest.approx(math.cos(w * value), abs=1e-4)
            assert emb[b, half + i].item() == pytest.approx(math.sin(w * value), abs=1e-4)


def test_fourier_features_are_fixed_gaussian_with_scale_16():
    layer = FourierEmbedding(512)
    # 256 draws of N(0, 16^2): the sample std is within 4 standard errors (16 / sqrt(2*256) each) of 16
    assert abs(layer.freqs.std().item() - 16) < 4 * 16 / math.sqrt(512)
    assert "freqs" in layer.state_dict() and not any(True for _ in layer.parameters())
    s = torch.tensor([-2.0, 0.5])
    angles = 2 * math.pi * s[:, None] * layer.freqs[None, :]
    torch.testing.assert_close(layer(s), torch.cat([angles.cos(), angles.sin()], 1))


def test_odd_dim_is_rejected():
    with pytest.raises(ValueError, match="even"):
        SinusoidalEmbedding(7)
