r"""The optimizer and the learning-rate schedule, as ``trainer.optimizer`` and ``trainer.lr_schedule`` name them.

Both are config targets (``_target_``) built with Hydra's ``instantiate(..., _partial_=True)``: the config
supplies a schedule's or optimizer's own options (``warmup_cosine``'s ``floor``), the trainer passes the shared
ones, ``trainer.lr``, ``adam_betas``, ``adam_eps``, ``weight_decay``, ``warmup_steps`` and ``max_steps``:

    optimizer = build_optimizer(params, tc)         # instantiate(tc.optimizer, _partial_=True)(params, lr=..., ...)
    lr_at     = build_lr_schedule(tc, max_steps)    # partial(instantiate(tc.lr_schedule, _partial_=True), lr=..., ...)
    lr_k      = lr_at(k)                            # the learning rate of optimizer step k (0-based)

Default (Ho et al. 2020): AdamW, linear warm-up to lr, then constant. A cosine decay after the warm-up:

    python train.py trainer.lr_schedule._target_=diffusion.training.optim.warmup_cosine
    python train.py trainer.lr_schedule._target_=diffusion.training.optim.warmup_cosine +trainer.lr_schedule.floor=0.1

A schedule is a pure function of the step, so a resumed run continues it exactly (as long as ``max_steps``,
which the cosine reads, is unchanged).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Iterable, Sequence

import torch

from diffusion.buildable import buildable
from diffusion.training.errors import ConfigError


@buildable
def adamw(params: Iterable[torch.nn.Parameter], *, lr: float, betas: Sequence[float] = (0.9, 0.999),
          eps: float = 1e-8, weight_decay: float = 0.0, fused: bool = True) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019). ``fused``: one kernel over all tensors (CPU and CUDA), the cheapest of
    torch's implementations."""
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=fused)


def warmup_lr(step: int, lr: float, warmup_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): lr * min(1, (step + 1) / warmup_steps)."""
    if warmup_steps <= 0:
        return lr
    return lr * min(1.0, (step + 1) / warmup_steps)


@buildable
def warmup_constant(step: int, *, lr: float, warmup_steps: int, max_steps: int | None = None) -> float:
    """lr_k = lr min(1, (k + 1) / warmup_steps): linear warm-up from lr / warmup_steps, then constant
    (Ho et al. 2020); ``max_steps`` is not used."""
    return warmup_lr(step, lr, warmup_steps)


@buildable
def warmup_cosine(step: int, *, lr: float, warmup_steps: int, max_steps: int, floor: float = 0.0) -> float:
    r"""Linear warm-up as ``warmup_constant``, then a half cosine from lr down to ``floor * lr`` at the last step
    (Loshchilov & Hutter 2017, "SGDR", without restarts):

        lr_k = lr (floor + (1 - floor) (1 + cos(pi p)) / 2),   p = (k + 1 - W) / (max_steps - W) clipped to [0, 1],

    W = warmup_steps; step max_steps - 1, the last one, uses floor * lr. Without steps after the warm-up
    (max_steps <= W) it is the warm-up alone."""
    if not 0.0 <= floor <= 1.0:
        raise ConfigError(f"trainer.lr_schedule.floor={floor} must be a fraction of trainer.lr in [0, 1]")
    warm = max(int(warmup_steps), 0)
    if step < warm or max_steps <= warm:
        return warmup_lr(step, lr, warm)
    p = min(max((step + 1 - warm) / (max_steps - warm), 0.0), 1.0)
    return lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p)))


__all__ = ["adamw", "warmup_lr", "warmup_constant", "warmup_cosine"]


def build_optimizer(params: Iterable[torch.nn.Parameter], tc: Any) -> torch.optim.Optimizer:
    """``trainer.optimizer`` built with the trainer's lr, adam_betas, adam_eps and weight_decay (``tc``: trainer.*)."""
    from hydra.utils import instantiate

    return instantiate(tc.optimizer, _partial_=True)(params, lr=float(tc.lr), betas=tuple(tc.adam_betas),
                                                     eps=float(tc.adam_eps), weight_decay=float(tc.weight_decay))


def build_lr_schedule(tc: Any, max_steps: int) -> Callable[[int], float]:
    """``trainer.lr_schedule`` as ``lr_at(k)``, with the trainer's lr and warmup_steps and ``max_steps``; a bad
    schedule option fails here, before training."""
    from hydra.utils import instantiate

    lr_at = partial(instantiate(tc.lr_schedule, _partial_=True), lr=float(tc.lr), warmup_steps=int(tc.warmup_steps),
                    max_steps=int(max_steps))
    lr_at(0)
    return lr_at
