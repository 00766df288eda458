r"""Run any registered sampler over a piece of its own time grid: what RePaint's time travel needs.

A sampler is a function that walks ``process.timesteps(n, spacing)`` from t_max to t_min and then steps to the
data; it has no "stop at time s" option. Two small wrappers give it one without touching its code:

* ``Window`` is the process seen through a slice of the sampler's grid: it delegates everything (alpha, sigma,
  f, g, posterior coefficients) to the process, but its ``timesteps`` returns the slice G[a], G[a+1], ... and
  its t_max / t_min are the slice's ends. The sampler then takes exactly the steps it would take on the full grid.
* ``StopAt`` wraps the model and raises ``Stopped(x)`` at the sampler's first model call at the stop time G[b]
  (before the model runs, so no evaluation is spent): every sampler here calls the model at each grid time with
  its current state first, so x is the sampler's own state x_{G[b]}. Samplers that evaluate a *trial* point at
  G[b] before settling their state there (Heun's correction, Karras et al. 2022 alg. 1) list how many such calls
  come first in ``CALLS_BEFORE_STATE``.

``sampler_grid`` finds the grid a sampler walks for ``steps`` by running it on a recording process with a model
that stops it at the first call. So the same code serves every sampler in ``SAMPLERS``; a segment of a sampler
with history (dpmpp_2m's previous x0_pred) starts without it, i.e. with a first-order step.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.processes.base import Process
from diffusion.samplers import sample

#: model calls a sampler makes at a grid time before the call whose input is its state there (default 0).
#: Heun (Karras et al. 2022, alg. 1) evaluates the Euler trial point at t_{i+1} first: once merged, it needs 1.
CALLS_BEFORE_STATE: dict[str, int] = {"heun": 1}


class Stopped(Exception):
    """Raised by ``StopAt`` with the sampler's state at the stop time."""

    def __init__(self, x: Tensor):
        super().__init__("segment end reached")
        self.x = x


class StopAt:
    """``model(x, t)`` that raises ``Stopped(x)`` at the (``skip`` + 1)-th call at time ``t_stop``."""

    def __init__(self, model: Callable[..., Tensor], t_stop: float, skip: int = 0):
        self.model, self.t_stop, self.skip, self.seen = model, float(t_stop), int(skip), 0

    def __call__(self, x: Tensor, t: Tensor, **kwargs) -> Tensor:
        if math.isclose(float(t.reshape(-1)[0]), self.t_stop, rel_tol=1e-9, abs_tol=1e-9):
            if self.seen == self.skip:
                raise Stopped(x)
            self.seen += 1
        return self.model(x, t, **kwargs)


class Window:
    """``process`` restricted to the times ``grid[start:]``: ``timesteps(n)`` returns ``grid[start:start + n]``."""

    def __init__(self, process: Process, grid: list[float], start: int, stop: int | None = None):
        self._process, self._grid, self._start = process, grid, start
        self.t_max = grid[start]
        self.t_min = grid[-1] if stop is None else grid[stop]

    def timesteps(self, steps: int, spacing: str = "uniform", rho: float = 7.0, t_min: float | None = None) -> Tensor:
        times = self._grid[self._start:self._start + int(steps)]
        if len(times) != int(steps):
            raise ValueError(f"internal: a segment asked for {steps} times, only {len(times)} remain")
        return torch.tensor(times, dtype=torch.float64)

    def __getattr__(self, name: str):
        return getattr(self._process, name)

    def __repr__(self) -> str:
        return repr(self._process)


class _Recorder(Window):
    def __init__(self, process: Process):
        self._process, self.asked = process, []
        self.t_max, self.t_min = process.t_max, process.t_min

    def timesteps(self, steps: int, spacing: str = "uniform", rho: float = 7.0, t_min: float | None = None) -> Tensor:
        self.asked.append((int(steps), spacing))
        return self._process.timesteps(steps, spacing, rho, t_min)


def sampler_grid(process: Process, sampler: str, steps: int, x: Tensor, **options) -> tuple[list[float], int]:
    """The times G the sampler walks for ``steps`` and the offset len(G) - steps (dpmpp_2m: 1, most: 0)."""
    recorder = _Recorder(process)

    def probe(x: Tensor, t: Tensor, **_) -> Tensor:
        raise Stopped(x)

    try:
        sample(recorder, probe, None, sampler, steps, None, x_T=x[:1], **options)
    except Stopped:
        pass
    if len(recorder.asked) != 1:
        raise ConfigError(f"sampler {sampler!r} does not walk one fixed time grid (an adaptive solver?), so RePaint "
                         "cannot go back along it; use method='replacement' or a fixed-grid sampler such as ddim")
    n, spacing = recorder.asked[0]
    return process.timesteps(n, spacing).tolist(), n - int(steps)


def run_segment(process: Process, model: Callable[..., Tensor], x: Tensor, sampler: str, grid: list[float],
                offset: int, start: int, stop: int | None, generator: torch.Generator | None,
                **kwargs) -> Tensor:
    """The sampler's state at ``grid[stop]`` after walking from ``x`` at ``grid[start]`` (``stop`` None: to the end,
    the sampler's own output). kwargs go to ``diffusion.sample`` (the sampler's options, clip_denoised)."""
    end = len(grid) - 1 if stop is None else stop
    steps = end - start + 1 - offset
    window = Window(process, grid, start, stop)
    if stop is not None:
        model = StopAt(model, grid[stop], CALLS_BEFORE_STATE.get(sampler, 0))
    try:
        return sample(window, model, None, sampler, steps, generator, x_T=x, **kwargs)
    except Stopped as stopped:
        return stopped.x


__all__ = ["Window", "StopAt", "Stopped", "sampler_grid", "run_segment", "CALLS_BEFORE_STATE"]
