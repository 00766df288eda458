"""Compatibility alias: GITS and the schedule files moved one layer up, to ``diffusion.fitting`` (``gits.py``,
``schedule_files.py``). ``diffusion.samplers.gits.<name>`` still finds them, loaded on first use, so that importing
the samplers never imports the layer above them. New code imports ``diffusion.fitting``."""
from __future__ import annotations

import importlib

_MOVED_UP = {"optimize_timesteps": "diffusion.fitting.gits", "save_timesteps": "diffusion.fitting.schedule_files",
             "load_timesteps": "diffusion.fitting.schedule_files", "read_schedule": "diffusion.fitting.schedule_files",
             "SCHEDULE_VERSION": "diffusion.fitting.schedule_files", "check_timesteps": "diffusion.samplers.grids"}


def __getattr__(name: str):
    if name == "SOLVER_LAYOUT":  # was a hand-kept tuple of names: now the registry's, by each sampler's layout
        return importlib.import_module("diffusion.samplers.registry").solver_layout_samplers()
    if name in _MOVED_UP:
        return getattr(importlib.import_module(_MOVED_UP[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["optimize_timesteps", "save_timesteps", "load_timesteps", "read_schedule", "check_timesteps", "SOLVER_LAYOUT"]
