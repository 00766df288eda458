r"""Inpainting with any sampler: fill in x where ``mask`` = 0 given the known values where ``mask`` = 1.

**Replacement** (Song et al. 2021, "Score-Based Generative Modeling through SDEs", appendix I.2; score_sde's
``get_pc_inpainter``): at every model call at time t the known coordinates of the input are replaced by a fresh
forward-noised copy of the known values,

    x_t <- m * (alpha_t x_known + sigma_t z) + (1 - m) * x_t,   z ~ N(0, I),

so the unknown coordinates move with the score of p_t evaluated at a point whose known part is a draw from
q(x_t^known | x_0^known). Here this is a wrapper around the model (``Replacement``), not a change to any sampler:
every sampler updates x coordinate-wise from eps (pc's Langevin step size uses the norm of that same eps), so
replacing the model's input is the same as replacing the state, and the final known entries are overwritten
with x_known. The replaced score is only an approximation of the conditional score grad log p_t(x_t | x_0^known):
the known part is noised independently of the sampler's trajectory, and the mixture weights come out biased
(``benchmarks/inpainting.md`` measures it).

**RePaint** (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic Models", alg. 1
and its jump schedule): the same replacement, but after every ``jump_length`` steps of the grid the state is
noised forward again, x_{t+j} ~ q(x_{t+j} | x_t) = N(alpha_{t+j|t} x_t, sigma_{t+j|t}^2 I), and the j steps are
run again, ``resamples`` times in all. The back-and-forth lets the unknown part harmonise with the known part
(a Markov chain whose stationary law is closer to the conditional); it costs about ``resamples`` x ``steps``
model evaluations. Going back in time is done with ``segments.run_segment``, which runs the chosen sampler
on a slice of its own grid, so RePaint too works with every sampler that walks a fixed grid.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.conditioning.segments import run_segment, sampler_grid
from diffusion.processes.base import Process
from diffusion.samplers import sample
from diffusion.samplers.common import alpha_sigma, noise_like, transition
from diffusion.utils import append_dims

METHODS = ("replacement", "repaint")


class Replacement:
    """``model(x, t)`` evaluated at x with its known entries replaced by alpha_t x_known + sigma_t z (fresh z)."""

    def __init__(self, process: Process, model: Callable[..., Tensor], x_known: Tensor, mask: Tensor,
                 generator: torch.Generator | None):
        self.process, self.model, self.x_known, self.mask, self.generator = process, model, x_known, mask, generator

    def __call__(self, x: Tensor, t: Tensor, **kwargs) -> Tensor:
        t64 = t.double()
        alpha = append_dims(self.process.alpha(t64).to(x.dtype), x.ndim)
        sigma = append_dims(self.process.sigma(t64).to(x.dtype), x.ndim)
        noised = alpha * self.x_known + sigma * noise_like(x, self.generator)
        return self.model(torch.where(self.mask, noised, x), t, **kwargs)


def check_mask(x_known: Tensor, mask: Tensor) -> Tensor:
    """``mask`` as a bool tensor shaped like x_known (1 = known); a one-line ValueError for a mask that does not
    broadcast to x_known, holds values other than 0/1, or leaves a sample with nothing or everything known."""
    mask = torch.as_tensor(mask, device=x_known.device)
    try:
        if torch.broadcast_shapes(mask.shape, x_known.shape) != x_known.shape:
            raise RuntimeError
    except RuntimeError:
        raise ConfigError(f"mask of shape {tuple(mask.shape)} does not fit images of shape {tuple(x_known.shape)}: "
                         f"give it shape {tuple(x_known.shape)} or one that broadcasts to it, "
                         f"e.g. {tuple(x_known.shape[1:])}") from None
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ConfigError("mask must hold only 0 (missing) and 1 (known)")
        mask = mask == 1
    mask = mask.expand(x_known.shape)
    known = mask.reshape(mask.shape[0], -1).float().mean(1)
    if bool((known == 1).any()):
        raise ConfigError("the mask marks every entry of a sample as known: nothing to inpaint (mask = 1 where known)")
    if bool((known == 0).any()):
        raise ConfigError("the mask marks no entry of a sample as known: use diffusion.sample for unconditional samples")
    return mask


def repaint_boundaries(end: int, jump_length: int) -> list[int]:
    """Grid indices where RePaint jumps back ``jump_length`` steps: end, end - j, end - 2j, ... >= j (ascending).
    ``end`` is the index of the sampler's output (len(grid), the data, for a sampler that ends with a denoising
    step), as in Lugmayr et al.'s ``get_schedule_jump``, which jumps at t = 0, j, 2j, ... < T - j."""
    return sorted(range(end, jump_length - 1, -jump_length))


@torch.no_grad()
def inpaint(process: Process, model: Callable[..., Tensor], x_known: Tensor, mask: Tensor, sampler: str = "ddim",
            steps: int = 50, method: str = "replacement", generator: torch.Generator | None = None, *,
            jump_length: int | None = None, resamples: int | None = None, x_T: Tensor | None = None,
            clip_denoised: float | None = None, sampler_options: dict | None = None, **options) -> Tensor:
    """Complete ``x_known`` where ``mask`` is 0; the result equals x_known where ``mask`` is 1.

    x_known: (batch, *dims); its entries where mask = 0 are ignored.
    mask: 1 (True) where known, shaped like x_known or broadcasting to it (e.g. one (C, H, W) mask for all).
    sampler, steps, options: any sampler of ``diffusion.samplers.SAMPLERS`` with its options, as for ``sample``.
    method: ``replacement`` (score_sde) or ``repaint`` (Lugmayr et al. 2022).
    jump_length, resamples: RePaint's j (default 10, at most steps) and r (default 10; 1 is replacement itself).
        The model is called about r x steps times.
    clip_denoised: as for ``sample`` (images in [-1, 1]: 1.0).
    sampler_options: the sampler's options as a dict, for names that clash with these parameters (the ``ode``
        sampler's ``method``); merged with ``options``.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown inpainting method {method!r}; choose one of {', '.join(METHODS)}")
    if method != "repaint" and (jump_length is not None or resamples is not None):
        raise ConfigError("jump_length and resamples are options of method='repaint'")
    mask = check_mask(x_known, mask)
    x_known = x_known.to(torch.get_default_dtype()) if not x_known.is_floating_point() else x_known
    if x_T is None:
        gen_device = generator.device if generator is not None else x_known.device
        x_T = process.prior_sample(tuple(x_known.shape), generator, device=gen_device, dtype=x_known.dtype)
    x = x_T.to(x_known.device, x_known.dtype)
    conditioned = Replacement(process, model, x_known, mask, generator)
    kwargs = dict(sampler_options or {}, **options, clip_denoised=clip_denoised)
    if method == "replacement":
        x = sample(process, conditioned, None, sampler, steps, generator, x_T=x, **kwargs)
    else:
        x = _repaint(process, conditioned, x, sampler, steps, generator, 10 if jump_length is None else jump_length,
                     10 if resamples is None else resamples, kwargs)
    return torch.where(mask, x_known, x)


def _repaint(process: Process, model: Callable[..., Tensor], x: Tensor, sampler: str, steps: int,
             generator: torch.Generator | None, jump_length: int, resamples: int, kwargs: dict) -> Tensor:
    if int(jump_length) != jump_length or jump_length < 1 or int(resamples) != resamples or resamples < 1:
        raise ConfigError(f"RePaint needs integers jump_length >= 1 and resamples >= 1, "
                         f"got jump_length={jump_length}, resamples={resamples}")
    grid, offset = sampler_grid(process, sampler, steps, x, **kwargs)
    end = len(grid) - offset  # index of the sampler's output: len(grid) = the data after a final denoising step
    jump = min(int(jump_length), end)
    start = 0
    for b in repaint_boundaries(end, jump):
        stop = None if b >= len(grid) - offset else b
        x = run_segment(process, model, x, sampler, grid, offset, start, stop, generator, **kwargs)
        for _ in range(int(resamples) - 1):
            x = _noise_up(process, x, grid, b, b - jump, generator)
            x = run_segment(process, model, x, sampler, grid, offset, b - jump, stop, generator, **kwargs)
        start = b
    if start < end:
        x = run_segment(process, model, x, sampler, grid, offset, start, None, generator, **kwargs)
    return x


def _noise_up(process: Process, x: Tensor, grid: list[float], index: int, back: int,
              generator: torch.Generator | None) -> Tensor:
    """x_{grid[back]} ~ q(. | x_{grid[index]}); index = len(grid) means x is data: q(x_t | x_0), t = grid[back]."""
    if index >= len(grid):
        alpha_ts, sigma_ts = alpha_sigma(process, grid[back])
    else:
        alpha_ts, sigma2_ts = transition(process, grid[back], grid[index])
        sigma_ts = sigma2_ts**0.5
    return alpha_ts * x + sigma_ts * noise_like(x, generator)


__all__ = ["inpaint", "Replacement", "check_mask", "repaint_boundaries", "METHODS"]
