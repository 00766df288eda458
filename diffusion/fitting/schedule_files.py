"""Schedule files: the JSON that carries a fitted grid (and iPNDM's fitted weights) from a fit to a sampler, and the
``fitted`` option value that asks for a fit to the run.

A configuration names a fitted value by reference: ``sampler.timesteps=<file>`` (written by ``evaluate.py
task=schedule``) or ``sampler.timesteps=fitted`` (fitted to the run on first use, ``cache.fitted_schedule``), and
the same for ``sampler.coefficients``. ``resolve.resolve_sampler`` turns either into values before any sampler
runs: the samplers take times and weights, never files.
"""
from __future__ import annotations

import os
from pathlib import Path

from diffusion.errors import ConfigError
from diffusion.utils import read_json, write_json

#: ``timesteps=fitted`` / ``coefficients=fitted``: fit the value to the run (``resolve.resolve_sampler``)
FITTED = "fitted"
SCHEDULE_VERSION = 1


def schedule_command(fit: str) -> str:
    """The command that writes a schedule file, for messages; ``fit``: what it fits (e.g. ``sampler=<name>``)."""
    return f"`evaluate.py ckpt=<run> task=schedule {fit} steps=<NFE>`"


def fitted_elsewhere(option: str, what: str, fit: str) -> ConfigError:
    """The error for ``<option>=fitted`` anywhere but sample.py, which alone fits it (into the run's schedules)."""
    return ConfigError(f"{option}={FITTED} ({what}) is resolved by sample.py's task=sample alone; here pass a "
                       f"schedule file from {schedule_command(fit)}, or {option}=null")


def schedule_file(out_dir: str | Path, sampler: str, steps: int) -> Path:
    """Where ``fit_schedule`` writes the grid for ``sampler`` at ``steps`` NFE, and the sweep looks for it."""
    return Path(out_dir) / f"{sampler}_{steps}.json"


def save_timesteps(path: str | os.PathLike, timesteps: list[float], **meta) -> Path:
    """Write a schedule file: JSON with ``timesteps`` and what they were fitted for (sampler, steps, process)."""
    return write_json(path, {"version": SCHEDULE_VERSION, "timesteps": [float(t) for t in timesteps], **meta}, indent=2)


def read_schedule(path: str | os.PathLike, key: str, fit: str = "sampler=<name>") -> object:
    """Entry ``key`` of a schedule file (a bare JSON list counts as its ``timesteps``); a missing file says how to
    write one: `evaluate.py ckpt=<run> task=schedule <fit> steps=<NFE>`."""
    command = schedule_command(fit)
    data = read_json(path, f"no schedule file at {path}: write one with {command}", "a schedule file")
    if isinstance(data, list) and key == "timesteps":
        return data
    if not isinstance(data, dict) or key not in data:
        raise ConfigError(f"{path} has no '{key}': write the schedule file with {command}")
    return data[key]


def load_timesteps(path: str | os.PathLike) -> list[float]:
    """The ``timesteps`` of a schedule file written by ``save_timesteps`` (or a bare JSON list of times)."""
    times = read_schedule(path, "timesteps")
    if not isinstance(times, list) or not all(isinstance(t, (int, float)) for t in times):
        raise ConfigError(f"{path} has no list of numbers under 'timesteps'")
    return [float(t) for t in times]


def load_coefficients(path: str | os.PathLike) -> list[list[float]]:
    """The ``coefficients`` of a schedule file (``fit_schedule`` with coefficients=fitted)."""
    rows = read_schedule(path, "coefficients", f"sampler=ipndm sampler.coefficients={FITTED}")
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise ConfigError(f"{path} has no lists of weights under 'coefficients'")
    return rows


__all__ = ["FITTED", "SCHEDULE_VERSION", "schedule_command", "fitted_elsewhere", "schedule_file", "save_timesteps",
           "read_schedule", "load_timesteps", "load_coefficients"]
