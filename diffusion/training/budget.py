"""The time budget of one ``Trainer.fit`` session: ``trainer.max_minutes`` and ``trainer.fit_budget``.

Out of time means that the periodic actions due at the last step (checkpoint, sample grid, bits/dim, FID: their
estimated or last durations) no longer fit before the deadline; the run then ends as ``max_steps`` would.

The budget fit: FIT_OVER optimizer steps after the first FIT_FROM of a session are timed (the slowest rank's), and
when ``max_steps`` would not fit the budget at that speed the run trains fewer steps, so that the lr schedule and
the EMA finish within ``max_minutes`` instead of being cut off mid-schedule:

    per_step = step_seconds + sum_a seconds_a / every_a        (periodic actions, amortized)
    steps    = step + floor((0.97 * seconds_left - sum_{a at end} seconds_a) / per_step)      (3% spare)
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Callable, Sequence

import torch

from diffusion.training import distributed as D
from diffusion.training.actions import Periodic, TrainingView

log = logging.getLogger(__name__)

#: the budget fit (trainer.fit_budget) times FIT_OVER optimizer steps after the first FIT_FROM of a session
FIT_FROM, FIT_OVER = 5, 20


class TimeBudget:
    """``minutes`` of training from now (0: no limit) for a session starting at ``start_step``; ``fit``: fit
    ``max_steps`` to the budget (trainer.fit_budget)."""

    def __init__(self, minutes: float, fit: bool, start_step: int, max_steps: int, device: torch.device):
        self.minutes, self.start, self.device = float(minutes), start_step, device
        self.deadline = time.perf_counter() + 60 * self.minutes if self.minutes > 0 else math.inf
        self.fitting = self.minutes > 0 and fit and start_step + FIT_FROM + FIT_OVER < max_steps
        self._timing_from: tuple[float, float] = (0.0, 0.0)

    def after_step(self, step: int, max_steps: int, actions: Sequence[Periodic], excluded_seconds: float,
                   view: Callable[[], TrainingView]) -> int | None:
        """Called after each optimizer step (``excluded_seconds``: the periodic actions' seconds so far, which the
        timing leaves out). After the session's first step it estimates what the actions will cost; after the
        timed steps it returns the lower ``max_steps`` that fits the budget, if one is needed."""
        if step == self.start + 1 and self.minutes > 0:
            estimate_costs(actions, view())
        if self.fitting and step == self.start + FIT_FROM:
            _synchronize(self.device)
            self._timing_from = (time.perf_counter(), excluded_seconds)
        if self.fitting and step == self.start + FIT_FROM + FIT_OVER:
            _synchronize(self.device)
            seconds = time.perf_counter() - self._timing_from[0] - (excluded_seconds - self._timing_from[1])
            slowest = D.max_over_ranks([seconds / FIT_OVER], self.device)[0]
            return self.steps_that_fit(step, max_steps, slowest, actions)
        return None

    def steps_that_fit(self, step: int, max_steps: int, step_seconds: float, actions: Sequence[Periodic]) -> int | None:
        """The ``max_steps`` that fits what is left of the budget at ``step_seconds`` per optimizer step, or None
        when ``max_steps`` fits already."""
        per_step = step_seconds + sum(a.seconds / a.every for a in actions if a.every > 0)
        at_end = sum(a.seconds for a in actions if a.at_end)
        fits = max(int((0.97 * (self.deadline - time.perf_counter()) - at_end) / per_step), 1)
        if step + fits >= max_steps:
            return None
        log.info(f"at {1 / step_seconds:.2f} steps/s, trainer.max_steps={max_steps} would not fit "
                 f"trainer.max_minutes={self.minutes:g}: training {step + fits} steps, so that the lr schedule "
                 "finishes in time (trainer.fit_budget=false keeps max_steps and stops where the time runs out)")
        return step + fits

    def out_of_time(self, actions: Sequence[Periodic]) -> bool:
        """Whether the actions due at the last step no longer fit before the deadline."""
        return time.perf_counter() + sum(a.seconds for a in actions if a.at_end) > self.deadline


def estimate_costs(actions: Sequence[Periodic], view: TrainingView) -> None:
    """Set each action's ``seconds`` that has a ``cost`` and has not run yet to that estimate (main rank: the
    evaluations run there alone)."""
    if view.is_main:
        for action in actions:
            if action.cost is not None and action.seconds == 0.0:
                action.seconds = action.cost(view)


@torch.no_grad()
def forward_seconds(view: TrainingView, n: int, autocast: bool) -> float:
    """Seconds of one forward pass of the EMA model at batch size ``n`` (``autocast``: in the training precision).
    The first call at a new shape pays one-time set-up (kernel choice, allocations), on a small network many
    times a forward pass: timed alone and multiplied by ~1,000 bound terms, it once reserved more than the whole
    budget and ended a run at step 1. So: the fastest of the calls after a warm-up."""
    device = view.device
    x = torch.zeros((n, *view.image_shape), device=device)
    t = torch.full((n,), float(view.process.t_max), device=device)
    labels = None if view.num_classes is None else torch.zeros(n, dtype=torch.long, device=device)
    seconds = []
    for _ in range(3):
        _synchronize(device)
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                (view.autocast() if autocast else contextlib.nullcontext()):
            view.model(x, t, class_labels=labels)
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    return min(seconds[1:])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


__all__ = ["TimeBudget", "estimate_costs", "forward_seconds", "FIT_FROM", "FIT_OVER"]
