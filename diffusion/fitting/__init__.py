"""Fitting: time grids (and iPNDM's weights) fitted to a trained model, one layer above the samplers.

A sampler takes its grid as a value (``diffusion.samplers.grids``). What is fitted to a model lives here:

    gits.py            ``optimize_timesteps``: GITS, a grid fitted by dynamic programming (+ refinement)
    coefficients.py    ``fit_coefficients``: iPNDM's multistep weights fitted on a grid
    schedule_files.py  the JSON files that carry both (``save_timesteps``, ``load_timesteps``, ...), and ``FITTED``
    cache.py           the run's fitted grids: ``fit_schedule`` (evaluate.py task=schedule), ``fitted_schedule``
    resolve.py         ``resolve_sampler``: a configured sampler with ``fitted`` or schedule-file options turned
                       into one with the values, the one call sample.py, evaluate.py, the sweep, inpainting and
                       the training grids make

A new sampler needs nothing here: the fit asks the registry for its layout (``register_sampler(layout=...)``).
"""
from __future__ import annotations

from diffusion.fitting.cache import default_refine, fit_schedule, fitted_schedule
from diffusion.fitting.coefficients import RIDGES, fit_coefficients, held_out_error
from diffusion.fitting.gits import optimize_timesteps
from diffusion.fitting.resolve import fitted_options, on_fitted_grid, on_fixed_grid, resolve_sampler
from diffusion.fitting.schedule_files import (FITTED, load_coefficients, load_timesteps, read_schedule, save_timesteps,
                                              schedule_file)

__all__ = ["optimize_timesteps", "fit_coefficients", "held_out_error", "RIDGES", "save_timesteps", "read_schedule",
           "load_timesteps", "load_coefficients", "schedule_file", "fit_schedule", "fitted_schedule", "default_refine",
           "FITTED", "resolve_sampler", "fitted_options", "on_fitted_grid", "on_fixed_grid"]
