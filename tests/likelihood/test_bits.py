from __future__ import annotations

import math

import pytest
import torch

from diffusion.likelihood import bits_per_dim, dequantize


def test_uniform_density_is_eight_bits_per_dim():
    """Uniform on [-1, 1]^d: nll = d log 2 nats, i.e. uniform bytes: exactly 8 bits/dim."""
    for d in (1, 3072):
        assert bits_per_dim(torch.tensor(d * math.log(2)), d).item() == pytest.approx(8.0, abs=1e-12)
    # a density uniform on half the range has one bit less
    assert bits_per_dim(3 * math.log(1.0), 3) == pytest.approx(7.0)


def test_dequantize_maps_bytes_into_their_bins():
    k = torch.arange(256, dtype=torch.uint8).repeat(40)
    x = dequantize(k, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and (x >= -1).all() and (x < 1).all()
    assert torch.equal(torch.floor((x + 1) * 128).long(), k.long())  # x = 2 (k + u)/256 - 1
    u = (x + 1) * 128 - k.float()
    assert abs(u.mean().item() - 0.5) < 4 * (1 / 12) ** 0.5 / len(u) ** 0.5  # U[0, 1): mean 1/2, 4 SE
    assert torch.equal(dequantize(k, torch.Generator().manual_seed(0)), x)


def test_dequantize_rejects_scaled_data():
    with pytest.raises(ValueError, match="integer"):
        dequantize(torch.rand(3))
    with pytest.raises(ValueError, match="0..255"):
        dequantize(torch.tensor([300]))
