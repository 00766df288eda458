"""The cache of grids fitted to a run: ``fit_schedule`` fits a time grid (GITS, ``gits.py``; with
``coefficients=fitted`` also iPNDM's weights on it, ``coefficients.py``) into a schedule file, and
``fitted_schedule`` finds the file fitted with the same settings for the same model, or fits it:
``<run>/eval/schedules/<sampler>_<steps>.json`` (``evaluate.py task=schedule`` writes it; ``sample.py
sampler.timesteps=<file>``, ``sampler.timesteps=fitted`` and the sweep read it)."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.fitting.coefficients import fit_coefficients
from diffusion.fitting.gits import optimize_timesteps
from diffusion.fitting.schedule_files import FITTED, save_timesteps, schedule_file
from diffusion.processes.base import Process
from diffusion.samplers import SAMPLERS, CountingModel
from diffusion.utils import read_json


def _fitted_options(options: dict | None) -> dict:
    """A sampler's options less its own grid (``timesteps``, ``spacing``), which a fitted grid replaces. Explicit
    ``coefficients`` belong to the grid they were fitted on: with a new grid only ``coefficients=fitted`` (fit
    them too) or none."""
    options = {k: v for k, v in (options or {}).items() if k not in ("timesteps", "spacing")}
    if options.get("coefficients") not in (None, FITTED):
        raise ConfigError("coefficients fitted for another grid cannot walk a newly fitted one: use "
                          "sampler.coefficients=fitted (fitted with the grid) or sampler.coefficients=null")
    return options


def default_refine(options: dict | None, refine: int | None) -> int:
    """``schedule.refine=null``: 4 sweeps (the grid moved while the sampler's own error falls), or 0 with
    ``coefficients=fitted``: there the refinement refits the weights for every trial grid (costly), and on the
    few-step benchmark it did not beat the plain GITS grid under fitted weights on every mixture
    (``benchmarks/samplers.md``)."""
    if refine is not None:
        return int(refine)
    return 0 if (options or {}).get("coefficients") == FITTED else 4


def fit_schedule(process: Process, model: Callable[..., Tensor], shape: tuple[int, ...], sampler: str, steps: int,
                 out_dir: str | Path, n: int = 256, seed: int = 0, device: torch.device | str | None = None,
                 fine_steps: int = 100, refine: int | None = 0, options: dict | None = None,
                 meta: dict | None = None) -> tuple[Path, list[float]]:
    """GITS times (``refine`` > 0: then refined on the sampler's own error, with its ``options``; a grid of its
    own, ``timesteps`` or ``spacing``, is dropped from them; None: ``default_refine``) for ``sampler`` at
    ``steps`` NFE on ``n`` prior draws of the per-sample ``shape``; with ``coefficients=fitted`` among the options
    (``ipndm``) also the multistep weights for that grid, on n further draws (their reference solve takes about
    ``fine_steps`` steps too: fine_steps / steps inside each step; fitted instead to the GITS solve's own states at
    the grid's times, which would save it, the weights came out worse on the few-step benchmark:
    ``benchmarks/samplers.md``). Returns the schedule file and the times. ``meta`` (e.g. the checkpoint and whether its EMA weights) is written into the file beside what it was
    fitted with."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    options = _fitted_options(options)
    refine = default_refine(options, refine)
    fit_weights = options.get("coefficients") == FITTED
    counter = CountingModel(model)
    started = time.perf_counter()
    generator = torch.Generator(device=device if device is not None else "cpu").manual_seed(seed)
    # the grid first (its refinement, if any, refits the weights for every trial grid), then the weights for it
    times = optimize_timesteps(process, counter, (n,) + tuple(shape), steps, sampler=sampler, generator=generator,
                               n=n, fine_steps=fine_steps, refine=refine, options=options, device=device)
    fitted = {}
    if fit_weights:
        report: dict = {}
        fitted["coefficients"] = fit_coefficients(process, counter, (n,) + tuple(shape), times, generator=generator,
                                                  n=n, order=int(options.get("order", 4)), device=device,
                                                  substeps=max(2, math.ceil(fine_steps / steps)), report=report)
        fitted["coefficients_fit"] = report
    path = save_timesteps(schedule_file(out_dir, sampler, steps), times, sampler=sampler, steps=steps,
                          process=repr(process), n=n, seed=seed, fine_steps=fine_steps, refine=refine,
                          options=options, fit_nfe=counter.nfe, **(meta or {}),
                          fit_seconds=round(time.perf_counter() - started, 2), **fitted)
    return path, times


def fitted_schedule(process: Process, model: Callable[..., Tensor], shape: tuple[int, ...], sampler: str, steps: int,
                    options: dict | None, out_dir: str | Path, *, refine: int | None = None, fine_steps: int = 100,
                    n: int = 256, seed: int = 0, device: torch.device | str | None = None, meta: dict | None = None,
                    log: Callable[[str], None] | None = None) -> Path:
    """The schedule file of ``sampler`` (with ``options``) at ``steps`` NFE fitted with ``refine`` and
    ``fine_steps`` (None: ``default_refine``) for the model that ``meta`` names (its checkpoint, EMA or not): the
    standard ``schedule_file``
    when it was fitted with these settings, else a file beside it
    named with a hash of them; fitted now (``fit_schedule``) where neither exists. A file fitted otherwise (say
    ``fewstep``'s order 3 where this is ``unipc`` of order 2: both are ``unipc_<steps>.json``) is never reused
    and never overwritten."""
    options = _fitted_options(options)
    refine = default_refine(options, refine)
    wanted = json.loads(json.dumps({"options": options, "refine": int(refine), "fine_steps": int(fine_steps),
                                    "n": int(n), **(meta or {})}))
    path = schedule_file(out_dir, sampler, steps)
    if path.exists():
        if {k: read_json(path, f"no schedule file at {path}", "a schedule file").get(k) for k in wanted} == wanted:
            return path
        digest = hashlib.sha1(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:8]
        path = path.with_name(f"{path.stem}_{digest}.json")
        if path.exists():
            return path
    if log is not None:
        log(f"fitting a {steps}-step grid for {sampler}{f' {options}' if options else ''} (task=schedule, "
            f"refine={refine}) into {path} ...")
    # fit_schedule writes the standard name: into a folder of this call's own, then moved to ``path``
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fitting-", dir=out_dir))
    try:
        written, _ = fit_schedule(process, model, shape, sampler, steps, staging, n=n, seed=seed, device=device,
                                  fine_steps=fine_steps, refine=refine, options=options, meta=meta)
        written.replace(path)
    finally:  # a failed or interrupted fit leaves no staging folder behind
        shutil.rmtree(staging, ignore_errors=True)
    if log is not None:
        saved = read_json(path, f"no schedule file at {path}", "a schedule file")
        log(f"fitted in {saved['fit_seconds']:.0f} s ({saved['fit_nfe']} model calls on {saved['n']} draws); later calls reuse it")
    return path


__all__ = ["fit_schedule", "fitted_schedule", "schedule_file", "default_refine"]
