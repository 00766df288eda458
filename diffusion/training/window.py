"""The logging window of the training loop: what a log line averages."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

import torch
from torch import Tensor


class Window:
    """Loss and grad-norm sums since the last log line, kept on the device (no host sync per step), the optimizer
    steps they cover and the seconds spent training in them (periodic actions excluded), plus the first step
    whose loss was not finite since ``fit`` began."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device)
        self.grad_norm = torch.zeros((), device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.all_excluded_seconds = 0.0  # since fit began (not reset with the window)
        self.reset()

    def add(self, step: int, loss: Tensor, grad_norm: Tensor) -> None:
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss), step, self.first_bad)
        self.loss += loss
        self.grad_norm += grad_norm.float()
        self.steps += 1

    def means(self) -> tuple[float, float]:
        """(mean loss, mean grad norm) over the window."""
        return (self.loss / self.steps).item(), (self.grad_norm / self.steps).item()

    def reset(self) -> None:
        self.loss.zero_(), self.grad_norm.zero_()
        self.steps, self.start, self.excluded_seconds = 0, time.perf_counter(), 0.0

    def training_seconds(self) -> float:
        return max(time.perf_counter() - self.start - self.excluded_seconds, 1e-9)

    @contextlib.contextmanager
    def excluded(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.excluded_seconds += elapsed
            self.all_excluded_seconds += elapsed


__all__ = ["Window"]
