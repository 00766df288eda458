r"""Exponential moving average of a network's weights (Polyak averaging; DDPM samples with it).

    theta_ema <- decay_t theta_ema + (1 - decay_t) theta,
    decay_t   = min(decay, (1 + t) / (10 + t))      with warm-up (t = number of updates so far),
    decay_t   = decay                               without.

The warm-up (as in TensorFlow's ExponentialMovingAverage with num_updates) lets a short run's average
forget the random initialisation: with decay 0.9999 and no warm-up the average after 2,000 steps would
still be 82% initial weights. Buffers (none in our U-Net) are copied, not averaged.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay_at(t: int, decay: float, warmup: bool = True) -> float:
    """decay_t for the update number ``t`` (0-based)."""
    return min(decay, (1 + t) / (10 + t)) if warmup else decay


class EMA:
    """The averaged copy of ``net`` (``.net``, in eval mode, no gradients), updated by ``update(net)``."""

    def __init__(self, net: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}: set trainer.ema_decay")
        self.decay, self.warmup = float(decay), bool(warmup)
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        self.num_updates = 0
        self._ema_tensors = (list(self.net.parameters()), list(self.net.buffers()))
        self._source: tuple[int, list, list] | None = None

    @torch.no_grad()
    def update(self, net: nn.Module) -> float:
        """One averaging step toward ``net``'s current weights; returns the decay used."""
        decay = ema_decay_at(self.num_updates, self.decay, self.warmup)
        if self._source is None or self._source[0] != id(net):  # list the tensors once per network
            self._source = (id(net), [p.detach() for p in net.parameters()], list(net.buffers()))
        (ema_params, ema_buffers), (_, params, buffers) = self._ema_tensors, self._source
        if ema_params:
            # lerp(a, b, w) = a + w (b - a) = decay a + (1 - decay) b with w = 1 - decay
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for b_ema, b in zip(ema_buffers, buffers):
            b_ema.copy_(b)
        self.num_updates += 1
        return decay

    def state_dict(self) -> dict:
        return self.net.state_dict()

    def load_state_dict(self, state: dict, num_updates: int) -> None:
        self.net.load_state_dict(state)
        self.num_updates = int(num_updates)
