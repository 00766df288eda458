"""The fitted rows' grids and iPNDM weights, made on draws of their own so that every row's fit is reproducible
alone. The one module of the benchmarks that imports the fits (``diffusion.fitting``)."""
from __future__ import annotations

import torch

from diffusion.fitting import FITTED, fit_coefficients, optimize_timesteps

#: prior draws every grid and weight fit runs on
FIT_N = 256


def gits_fit(proc, eps, dim: int, nfes, fit_seed: int) -> tuple[dict[int, list[float]], dict]:
    """The ``gits`` grids (iPNDM's GITS on 256 draws) per NFE, and the fitting options (n, the generator, now past
    those fits) that the ``gits+refine`` rows go on with."""
    fit = dict(n=FIT_N, generator=torch.Generator().manual_seed(fit_seed + 50))
    return {k: optimize_timesteps(proc, eps, (1, dim), k, sampler="ipndm", **fit) for k in nfes}, fit


def refined_fit(proc, eps, dim: int, nfes, sampler: str, options: dict, refine: int, fit: dict) -> dict[int, list[float]]:
    """The ``<sampler> gits+refine`` grids: GITS, then moved while ``sampler``'s own end error falls; ``fit`` is
    ``gits_fit``'s (its generator goes on in turn)."""
    return {k: optimize_timesteps(proc, eps, (1, dim), k, sampler=sampler, options=options, refine=refine, **fit)
            for k in nfes}


def gits_weights(proc, eps, dim: int, gits: dict[int, list[float]], fit_seed: int) -> dict[int, list[list[float]]]:
    """The ``ipndm gits+weights`` row's weights: iPNDM's fitted on each GITS grid, on draws of their own (so that
    the grids are the same with or without this row). ``fit_seed``: --seed + 1000 --fit-seed."""
    g = torch.Generator().manual_seed(fit_seed + 60)
    return {k: fit_coefficients(proc, eps, (1, dim), grid, generator=g, n=FIT_N) for k, grid in gits.items()}


def joint_fit(proc, eps, dim: int, nfes, fit_seed: int, refine: int) -> tuple[dict, dict]:
    """The ``ipndm gits+refine+weights`` row: per NFE the grid refined while iPNDM's held-out error, its weights
    refitted for each trial grid, falls, and the weights fitted on the chosen grid; one generator in turn."""
    g = torch.Generator().manual_seed(fit_seed + 70)
    grids = {k: optimize_timesteps(proc, eps, (1, dim), k, sampler="ipndm", n=FIT_N, generator=g, refine=refine,
                                   options={"coefficients": FITTED}) for k in nfes}
    return grids, {k: fit_coefficients(proc, eps, (1, dim), grids[k], generator=g, n=FIT_N) for k in nfes}
