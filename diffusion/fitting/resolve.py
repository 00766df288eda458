"""``resolve_sampler``: a configured sampler, whose grid (or iPNDM's weights) may be named by reference, turned into
one that carries the values, for a given run. Every caller that samples from a configuration goes through it:
``sample.py``, ``evaluate.py`` (task=sweep, task=schedule), the sweep, inpainting and the training grids.

    spec = resolve_sampler(sampler_from_config(cfg.sampler), process, model, shape,
                           schedules_dir=run_dir / "eval" / "schedules", meta=trained.weights)
    x0 = spec(process, model, shape, generator=g)

A reference is a schedule file (``sampler.timesteps=<file>``, ``sampler.coefficients=<file>``: read) or
``fitted`` (fitted to the run on first use and kept, ``cache.fitted_schedule``; only where a model is at hand to
fit: ``fit=True``). The samplers below take only values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.fitting.cache import fitted_schedule
from diffusion.fitting.schedule_files import FITTED, fitted_elsewhere, load_coefficients, load_timesteps, schedule_file
from diffusion.processes.base import Process
from diffusion.samplers.grids import REFERENCE_OPTIONS, is_reference
from diffusion.samplers.spec import SamplerSpec

#: what ``fitted`` means for each option, and the command that fits it (for the one-line refusals)
_FITTED_WHAT = {"timesteps": ("a grid fitted to the run", "sampler=<name>"),
                "coefficients": ("iPNDM weights fitted to the run", f"sampler=ipndm sampler.coefficients={FITTED}")}
_LOADERS = {"timesteps": load_timesteps, "coefficients": load_coefficients}


def fitted_options(spec: SamplerSpec) -> list[str]:
    """The options of ``spec`` that ask for a fit to the run (``<option>=fitted``)."""
    return [k for k in REFERENCE_OPTIONS if spec.options.get(k) == FITTED]


def on_fitted_grid(spec: SamplerSpec) -> SamplerSpec:
    """``spec`` walking a grid fitted to the run (``timesteps=fitted``), with its weights fitted too where it asks."""
    return spec.replace(timesteps=FITTED)


def on_fixed_grid(spec: SamplerSpec) -> SamplerSpec:
    """``spec`` as it walks its fixed grid: ``coefficients=fitted`` are fitted with a grid, so here it keeps the
    sampler's own weights (iPNDM: Adams-Bashforth's)."""
    return spec.replace(coefficients=None) if spec.options.get("coefficients") == FITTED else spec


def resolve_sampler(spec: SamplerSpec, process: Process, model: Callable[..., Tensor] | None = None,
                    shape: tuple[int, ...] | None = None, *, fit: bool = True,
                    schedules_dir: str | Path | None = None, refine: int | None = None, fine_steps: int = 100,
                    n: int = 256, seed: int = 0, meta: dict | None = None,
                    device: torch.device | str | None = None,
                    log: Callable[[str], None] | None = None) -> SamplerSpec:
    """``spec`` with every reference replaced by its values, checked against ``process``.

    ``timesteps=fitted`` (with ``coefficients=fitted`` too, for ipndm): the run's grid for this sampler, its options
    and ``spec.steps`` NFE, from ``schedules_dir`` when it was fitted there with the same settings (``refine``,
    ``fine_steps``, ``n``, and ``meta``: the checkpoint and its weights), else fitted now on ``n`` prior draws of
    the per-sample ``shape`` with ``model`` (``cache.fitted_schedule``; ``log`` hears what it fits). A schedule
    file's path: its values. ``fit=False`` (callers that sample as configured, without a model to fit to: the
    training grids, inpainting, the sweep's fixed rows) refuses ``fitted`` in one line and still reads files.
    The returned spec records the file each value came from (``spec.sources``) and names its walk (``label``)."""
    spec.check(process)  # everything around the references, before any fit
    fitted = fitted_options(spec)
    if fitted and not fit:  # the grid first, in the order the samplers check them
        raise fitted_elsewhere(fitted[0], *_FITTED_WHAT[fitted[0]])
    if "coefficients" in fitted and "timesteps" not in fitted:
        raise ConfigError("sampler.coefficients=fitted are fitted together with their grid: set "
                          "sampler.timesteps=fitted too (or pass a schedule file to both)")
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    grid_name = None
    if fitted:
        if model is None or shape is None or schedules_dir is None:
            raise TypeError("resolve_sampler needs model, shape and schedules_dir to fit timesteps=fitted")
        path = fitted_schedule(process, model, shape, spec.name, spec.steps, spec.options, schedules_dir,
                               refine=refine, fine_steps=fine_steps, n=n, seed=seed, device=device, meta=meta,
                               log=log)
        sources = {option: str(path) for option in fitted}
        # the standard file names the walk <steps>_fitted; one fitted with other settings adds its digest
        digest = path.stem[len(schedule_file(".", spec.name, spec.steps).stem) + 1:]
        grid_name = f"{spec.steps}_fitted" + (f"_{digest}" if digest else "")
    for option in REFERENCE_OPTIONS:
        value = spec.options.get(option)
        if option not in sources and is_reference(value):  # a schedule file
            sources[option] = str(value)
    if not sources:
        return spec
    for option, path in sources.items():
        values[option] = _LOADERS[option](path)
    if grid_name is None and "timesteps" in sources:
        grid_name = Path(sources["timesteps"]).stem
    return spec.with_values(grid_name, sources, **values).check(process)


__all__ = ["resolve_sampler", "fitted_options", "on_fitted_grid", "on_fixed_grid"]
