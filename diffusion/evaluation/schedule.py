"""Compatibility alias: the cache of fitted grids (``fit_schedule``, ``fitted_schedule``, ``schedule_file``,
``default_refine``) moved to ``diffusion.fitting`` (``cache.py``, ``schedule_files.py``), the package of everything
fitted to a model. New code imports ``diffusion.fitting``."""
from __future__ import annotations

from diffusion.fitting.cache import default_refine, fit_schedule, fitted_schedule
from diffusion.fitting.schedule_files import schedule_file

__all__ = ["fit_schedule", "fitted_schedule", "schedule_file", "default_refine"]
