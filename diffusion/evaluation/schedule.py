"""``evaluate.py task=schedule``: fit a time grid to a trained model (GITS, ``samplers/gits.py``) and write it
where ``sample.py sampler.timesteps=<file>`` and the sweep read it: ``<run>/eval/schedules/<sampler>_<steps>.json``."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from diffusion.processes.base import Process
from diffusion.samplers import CountingModel, SAMPLERS
from diffusion.samplers.gits import optimize_timesteps, save_timesteps


def schedule_file(out_dir: str | Path, sampler: str, steps: int) -> Path:
    """Where ``fit_schedule`` writes the grid for ``sampler`` at ``steps`` NFE, and the sweep looks for it."""
    return Path(out_dir) / f"{sampler}_{steps}.json"


def fit_schedule(process: Process, model: Callable[..., Tensor], shape: tuple[int, ...], sampler: str, steps: int,
                 out_dir: str | Path, n: int = 256, seed: int = 0, device: torch.device | str | None = None,
                 fine_steps: int = 100, refine: int = 0, options: dict | None = None) -> tuple[Path, list[float]]:
    """GITS times (``refine`` > 0: then refined on the sampler's own error, with its ``options``; a grid of its
    own, ``timesteps`` or ``spacing``, is dropped from them) for ``sampler`` at ``steps`` NFE on ``n`` prior draws
    of the per-sample ``shape``; returns the schedule file and the times."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    options = {k: v for k, v in (options or {}).items() if k not in ("timesteps", "spacing")}
    counter = CountingModel(model)
    started = time.perf_counter()
    generator = torch.Generator(device=device if device is not None else "cpu").manual_seed(seed)
    times = optimize_timesteps(process, counter, (n,) + tuple(shape), steps, sampler=sampler, generator=generator,
                               n=n, fine_steps=fine_steps, refine=refine, options=options, device=device)
    path = save_timesteps(schedule_file(out_dir, sampler, steps), times, sampler=sampler, steps=steps,
                          process=repr(process), n=n, seed=seed, fine_steps=fine_steps, refine=refine,
                          options=options, fit_nfe=counter.nfe,
                          fit_seconds=round(time.perf_counter() - started, 2))
    return path, times


__all__ = ["fit_schedule", "schedule_file"]
