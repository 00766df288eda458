"""What the training loop runs besides optimizer steps: ``Periodic`` actions (the checkpoint, and the evaluations
that train.py hands to the Trainer), and the ``TrainingView`` of the run that an evaluation receives."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch

from diffusion.processes.base import Process
from diffusion.training.logging import RunLogger


@dataclass(frozen=True)
class TrainingView:
    """The run as an evaluation sees it after an optimizer step: the EMA eps model ``model`` and its ``process``
    on ``device``, the ``step`` just finished, the run's ``logger`` (TensorBoard, sample PNGs), the images'
    ``image_shape`` (C, H, W) and ``num_classes``, whether this is the main rank (evaluations run there alone),
    and ``autocast()``: the network's forward passes in the training precision."""

    model: Callable[..., torch.Tensor]
    process: Process
    step: int
    logger: RunLogger
    device: torch.device
    image_shape: tuple[int, int, int]
    num_classes: int | None
    is_main: bool
    autocast: Callable[[], ContextManager]


@dataclass
class Periodic:
    """An action run every ``every`` optimizer steps (0: never) and, if ``at_end``, at the run's last step.
    ``seconds``: how long it last took (an estimate until it has run), reserved by the time budget; ``cost``
    estimates it from the view before the first run (``training.budget.forward_seconds`` times one network call)."""

    name: str
    every: int
    action: Callable[[TrainingView], Any]
    at_end: bool = True
    seconds: float = 0.0
    cost: Callable[[TrainingView], float] | None = None

    def due(self, step: int, final: bool) -> bool:
        return (self.every > 0 and step % self.every == 0) or (final and self.at_end)

    def run(self, view: TrainingView) -> None:
        start = time.perf_counter()
        self.action(view)
        self.seconds = time.perf_counter() - start


__all__ = ["Periodic", "TrainingView"]
