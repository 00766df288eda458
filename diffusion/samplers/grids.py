"""The time grids the samplers walk: fixed ones built from ``steps`` and ``spacing``, or explicit times checked.

Samplers take grids as values, as k-diffusion's take ``sigmas``: ``timesteps=`` is a list (or tensor) of times,
and replaces ``steps`` and ``spacing``. A grid named by reference in a configuration (a schedule file, or one to
be fitted to the run) is turned into times above the samplers, by ``diffusion.fitting.resolve_sampler``; nothing
here reads a file. How many times a sampler walks for ``steps`` model calls is its layout, declared where it
registers (``registry.layout``): ``grid`` for the samplers that end with a denoising step, ``solver_grid`` for the
multistep solvers, ``sampler_grid`` for any registered sampler by name.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.processes.base import Process
from diffusion.samplers.registry import SOLVER, layout

#: what a sampler's ``timesteps=`` option accepts: explicit times, from t_max down (None: steps and spacing)
Timesteps = Sequence[float] | Tensor | None

#: the options whose values a configuration may give by reference (a schedule file's path, or ``fitted``): the
#: layer above the samplers (``diffusion.fitting``) turns such a reference into the values; ``SamplerSpec.check``
#: leaves a reference alone and checks the rest
REFERENCE_OPTIONS = ("timesteps", "coefficients")


def is_reference(value: object) -> bool:
    """A value given by reference (a str or path) rather than as the values themselves."""
    return isinstance(value, (str, os.PathLike))


def unresolved(option: str, value: object) -> ConfigError:
    """The error for a reference that reached a sampler: a sampler takes values, not files or fits."""
    return ConfigError(f"{option}={str(value)!r} is a reference (a schedule file or a fit), and a sampler takes the "
                       f"values themselves: resolve it first with diffusion.fitting.resolve_sampler (sample.py, "
                       f"evaluate.py, the sweep and the training grids do), or read a file with "
                       f"diffusion.fitting.load_{'timesteps' if option == 'timesteps' else 'coefficients'}")


def check_timesteps(process: Process, timesteps: Sequence[float] | Tensor) -> list[float]:
    """Explicit times as floats: finite, strictly decreasing, within [min(t_eps, t_min), t_max] of ``process``."""
    if is_reference(timesteps):
        raise unresolved("timesteps", timesteps)
    ts = [float(t) for t in (timesteps.tolist() if isinstance(timesteps, Tensor) else timesteps)]
    if not ts:
        raise ConfigError("timesteps is empty: give the times to walk, from t_max down")
    if not all(math.isfinite(t) for t in ts) or any(b >= a for a, b in zip(ts, ts[1:])):
        raise ConfigError(f"timesteps must be finite and strictly decreasing, got {ts}")
    lo, hi = min(process.t_eps, process.t_min), process.t_max
    if ts[0] > hi * (1 + 1e-9) or ts[-1] < lo * (1 - 1e-9):
        raise ConfigError(f"timesteps must lie in [{lo:g}, {hi:g}] for {process!r}, got {ts[0]:g} ... {ts[-1]:g}")
    return ts


def grid(process: Process, steps: int, spacing: str, timesteps: Timesteps = None) -> list[float]:
    """``steps`` model times from t_max down to t_min; the sampler ends with one step to the clean data.

    Every sampler's grid goes through here (or ``solver_grid``), so every sampler takes ``timesteps=``: explicit
    times replace ``steps`` and ``spacing``, and ``grid(p, n, sp, p.timesteps(n, sp))`` is ``grid(p, n, sp)``."""
    if timesteps is not None:
        return check_timesteps(process, timesteps)
    if int(steps) != steps or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    return process.timesteps(int(steps), spacing).tolist()


def solver_grid(process: Process, steps: int, spacing: str, timesteps: Timesteps, name: str) -> list[float]:
    """The ``steps + 1`` times of the multistep solvers (dpmpp_2m, unipc, ...), which evaluate the model at all but
    the last and stop there; explicit ``timesteps`` (at least 2) replace steps and spacing (NFE = len - 1)."""
    if timesteps is not None:
        ts = check_timesteps(process, timesteps)
        if len(ts) < 2:
            raise ConfigError(f"{name} needs at least 2 timesteps (it stops at the last), got {len(ts)}")
        return ts
    if int(steps) != steps or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    try:
        return grid(process, int(steps) + 1, spacing)
    except ValueError as err:  # the message names steps + 1, which the caller never passed
        raise ConfigError(f"{name} with steps={steps} walks {int(steps) + 1} times: {err}") from None


def sampler_grid(process: Process, sampler: str, steps: int, spacing: str) -> list[float]:
    """The fixed grid the registered ``sampler`` walks for ``steps`` model calls on ``spacing``, by its layout."""
    if layout(sampler) == SOLVER:
        return solver_grid(process, steps, spacing, None, sampler)
    return grid(process, steps, spacing)


__all__ = ["Timesteps", "REFERENCE_OPTIONS", "is_reference", "unresolved", "check_timesteps", "grid", "solver_grid",
           "sampler_grid"]
