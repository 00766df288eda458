"""EMA: decay_t = min(decay, (1+t)/(10+t)) and theta_ema <- decay_t theta_ema + (1 - decay_t) theta."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diffusion.training.ema import EMA, ema_decay_at


def test_decay_schedule():
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)          # (1+0)/(10+0)
    assert ema_decay_at(90, 0.999) == pytest.approx(91 / 100)
    assert ema_decay_at(10**6, 0.999) == 0.999                   # capped at decay
    assert ema_decay_at(0, 0.999, warmup=False) == 0.999
    # crossover: (1+t)/(10+t) = d  <=>  t = (10 d - 1)/(1 - d) = 8989 for d = 0.999
    assert ema_decay_at(8988, 0.999) < 0.999 and ema_decay_at(8990, 0.999) == 0.999


class Scalar(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([value], dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))


def test_update_matches_closed_form():
    """Weights held at c: theta_ema after n updates = c + (theta_0 - c) prod_{t<n} decay_t (exact in float64)."""
    net = Scalar(5.0)
    ema = EMA(net, decay=0.99, warmup=True)
    with torch.no_grad():
        net.w.fill_(2.0)
        net.count.fill_(7.0)
    product = 1.0
    for t in range(50):
        used = ema.update(net)
        assert used == ema_decay_at(t, 0.99)
        product *= used
    expected = 2.0 + (5.0 - 2.0) * product
    assert math.isclose(ema.net.w.item(), expected, rel_tol=1e-13)
    assert ema.net.count.item() == 7.0          # buffers are copied, not averaged
    assert ema.num_updates == 50


def test_update_every_parameter_and_no_grad():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.SiLU(), nn.Linear(4, 2))
    ema = EMA(net, decay=0.9, warmup=False)
    before = [p.clone() for p in ema.net.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    ema.update(net)
    for p_ema, p0, p in zip(ema.net.parameters(), before, net.parameters()):
        torch.testing.assert_close(p_ema, 0.9 * p0 + 0.1 * p, rtol=1e-6, atol=1e-7)  # float32 lerp vs. two products
        assert not p_ema.requires_grad
    assert not ema.net.training


def test_state_roundtrip_and_bad_decay():
    net = Scalar(1.0)
    ema = EMA(net, 0.5)
    with torch.no_grad():
        net.w.fill_(3.0)
    ema.update(net)
    other = EMA(Scalar(0.0), 0.5)
    other.load_state_dict(ema.state_dict(), num_updates=1)
    assert other.net.w.item() == ema.net.w.item() and other.num_updates == 1
    with pytest.raises(ValueError, match="ema_decay"):
        EMA(net, decay=1.5)
