"""A run maps a nominal NFE to (samples, counted NFE): ours on a fixed spacing or on given grids, each counted by
``CountingModel`` (the peers' adapters in ``peers`` count the same way); a sweep scores a run over NFEs."""
from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
from torch import Tensor

from diffusion import samplers
from diffusion.samplers import CountingModel, sample

from .targets import Target

#: nominal NFE -> (samples, counted NFE); raising ValueError marks the cell n/a
Run = Callable[[int], tuple[Tensor, int]]


def default_spacing(sampler: str) -> str:
    """The spacing a sampler uses when none is given (its keyword's default)."""
    return inspect.signature(getattr(samplers, sampler)).parameters["spacing"].default


def ours(process, model, x_T: Tensor, sampler: str, steps_for: Callable[[int], int] = lambda n: n, **options) -> Run:
    """Our ``sampler`` from ``x_T`` at ``steps_for(nfe)`` steps on its own grid (``spacing`` among ``options``)."""
    def run(nfe: int):
        counter = CountingModel(model)
        x = sample(process, counter, None, sampler=sampler, steps=steps_for(nfe), x_T=x_T,
                   generator=torch.Generator().manual_seed(nfe), **options)
        return x, counter.nfe
    return run


def grid_run(process, model, x_T: Tensor, sampler: str, options: dict, grids: dict[int, list[float]],
             weights: dict[int, list[list[float]]] | None = None) -> Run:
    """Our ``sampler`` on the grid ``grids[nfe]`` (and with iPNDM's ``weights[nfe]``): the fitted rows."""
    def run(nfe: int):
        counter = CountingModel(model)
        fitted = {"coefficients": weights[nfe]} if weights is not None else {}
        x = sample(process, counter, None, sampler, x_T=x_T, timesteps=grids[nfe], **options, **fitted)
        return x, counter.nfe
    return run


def sweep(label: str, run: Run, nfes, target: Target, results: dict) -> None:
    """``results[label][nfe] = (FD / floor, counted NFE, error or None)`` for each NFE, printed as one line."""
    row = {}
    for nfe in nfes:
        try:
            x, counted = run(nfe)
        except (ValueError, AssertionError) as err:
            row[nfe] = (float("nan"), None, str(err).splitlines()[0])
            continue
        row[nfe] = (target.ratio(x), counted, None)
    results[label] = row
    cells = "  ".join(f"{n}:{r:.3g}" for n, (r, _, _) in row.items())
    print(f"  {label:<46s} {cells}", flush=True)


def cell(entry, nominal: int) -> str:
    """A sweep's entry as a table cell: ``r``, ``r (k)`` when it ran k NFE instead, ``n/a``, ``diverged``, ``-``."""
    if entry is None:
        return "-"
    r, counted, err = entry
    if err is not None or counted is None:
        return "n/a"
    s = f"{r:.3g}" if math.isfinite(r) else "diverged"
    return s if counted == nominal else f"{s} ({counted})"


def r3(v: float) -> float:
    """v to the 3 significant digits the tables show: equal at that precision is a tie (ours and the authors'
    code run the same algorithm on some rows and differ only by float32 rounding, ~1e-6 relative)."""
    return float(f"{v:.3g}")


def nan_inf(v: float) -> float:
    """NaN (a cell that did not run) as +inf, so that min() never picks it."""
    return v if math.isfinite(v) else float("inf")
