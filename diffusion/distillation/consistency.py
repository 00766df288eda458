r"""Consistency distillation (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", algorithm 2), on every
process.

A consistency function maps every point of a probability-flow ODE trajectory to the trajectory's end at t_min:
f(x_t, t) = x_{t_min} for all t on one trajectory. The student is a ``diffusion.consistency.ConsistencyModel``,
f = c_skip x + (1 - c_skip) x0_pred with f(x, t_min) = x exactly, whose x0_pred through the eps interface is f.
With s = sigma / alpha (EDM's sigma_hat: every process here is a scaled EDM process):

Distillation: on a grid t_min = t_0 < ... < t_N = t_max, draw n, noise the data to x_{n+1}, take one step of the
teacher's probability-flow ODE to x_hat_n (``solver``: ``ddim``, Euler in (y, s), or EDM's ``heun``; both are the
update rules of our samplers of those names, per sample), and pull the student's output at (x_{n+1}, t_{n+1})
towards the target network's at (x_hat_n, t_n):

    L = lambda_n d(f_theta(x_{n+1}, t_{n+1}), f_target(x_hat_n, t_n)),   lambda_n = 1 / (s_{n+1} - s_n)

(Song & Dhariwal 2023, "Improved Techniques for Training Consistency Models", sec. 3.4; ``weighting="uniform"``:
lambda_n = 1), with d the squared L2
distance per dimension or the pseudo-Huber distance sqrt(|a - b|^2 + c^2) - c, c = 0.00054 sqrt(dims) (their
eq. 8). The target network is the student itself under stop-gradient (``target="stopgrad"``, as Geng et al. 2024,
"Consistency Models Made Easy", and iCT's EMA decay 0) or an exponential moving average of it (``target="ema"``,
the original paper's theta^-). The defaults (Heun, 18 intervals on Karras' grid, pseudo-Huber, iCT's weights, an
EMA target) were chosen on exact Gaussian-data teachers over every process (``benchmarks/distillation.md``).
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import Tensor, nn

from diffusion.buildable import buildable
from diffusion.consistency import alpha_and_level as _alpha_s
from diffusion.errors import ConfigError
from diffusion.processes.base import Process
from diffusion.utils import append_dims

SOLVERS = ("ddim", "heun")
DISTANCES = ("l2", "pseudo_huber")
TARGETS = ("stopgrad", "ema")
WEIGHTINGS = ("uniform", "ict")
SPACINGS = ("karras", "logsnr", "uniform")


def consistency_grid(process: Process, steps: int, spacing: str = "karras") -> Tensor:
    """t_0 = t_min < ... < t_N = t_max (N = ``steps``), float64, ascending: the discretization of the ODE."""
    if spacing not in SPACINGS:
        raise ConfigError(f"unknown distill.spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    if int(steps) != steps or steps < 1:
        raise ConfigError(f"distill.steps must be a positive integer, got {steps!r}")
    return process.timesteps(int(steps) + 1, spacing).flip(0)


def teacher_step(process: Process, teacher: Callable[..., Tensor], x: Tensor, t: Tensor, t_next: Tensor,
                 solver: str = "heun", class_labels: Tensor | None = None) -> Tensor:
    """One step of the teacher's probability-flow ODE from (x, t) to t_next, per sample (t, t_next: shape (batch,)).

    In y = x / alpha, s = sigma / alpha the ODE reads dy/ds = eps(x, t) (``samplers/ipndm.py``); ``ddim`` is
    Euler on it (DDIM with eta = 0), ``heun`` adds EDM's second-order correction (Karras et al. 2022, alg. 1)."""
    if solver not in SOLVERS:
        raise ConfigError(f"unknown distill.solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    kwargs = {} if class_labels is None else {"class_labels": class_labels}
    alpha, s = (append_dims(c.to(x.dtype), x.ndim) for c in _alpha_s(process, t))
    alpha_next, s_next = (append_dims(c.to(x.dtype), x.ndim) for c in _alpha_s(process, t_next))
    y = x / alpha
    eps = teacher(x, t, **kwargs).to(x.dtype)
    y_next = y + (s_next - s) * eps
    if solver == "heun":
        eps_next = teacher(alpha_next * y_next, t_next, **kwargs).to(x.dtype)
        y_next = y + (s_next - s) * 0.5 * (eps + eps_next)
    return alpha_next * y_next


def _plain_copy(student: nn.Module) -> nn.Module:
    """A copy of the student whose network is the bare module: a DDP wrapper (``.module``) or a compiled one
    (``._orig_mod``) cannot be deep-copied, and the target needs neither."""
    holder = getattr(student, "inner", student)
    net = holder.net
    bare = getattr(net, "module", net)
    bare = getattr(bare, "_orig_mod", bare)
    holder.net = bare
    try:
        return copy.deepcopy(student)
    finally:
        holder.net = net


def _x0(process: Process, model: Callable[..., Tensor], x: Tensor, t: Tensor, class_labels: Tensor | None) -> Tensor:
    """x0_pred through the eps interface (for a ``ConsistencyModel`` this is f; DDP forwards only ``forward``)."""
    alpha, s = (append_dims(c.to(x.dtype), x.ndim) for c in _alpha_s(process, t))
    eps = (model(x, t) if class_labels is None else model(x, t, class_labels)).to(x.dtype)
    return x / alpha - s * eps


@buildable
class ConsistencyDistillation:
    """The consistency distillation loss (module docstring), called like every loss:
    ``loss(model, x0, class_labels=None, generator=None) -> (batch,)`` with ``model`` the student
    ``diffusion.consistency.ConsistencyModel`` (or its DDP wrapper). ``teacher``: the teacher's eps model (frozen)."""

    def __init__(self, process: Process, teacher: Callable[..., Tensor], *, steps: int = 18, spacing: str = "karras",
                 solver: str = "heun", distance: str = "pseudo_huber", target: str = "ema",
                 ema_decay: float = 0.95, weighting: str = "ict"):
        if distance not in DISTANCES:
            raise ConfigError(f"unknown distill.distance {distance!r}; choose one of {', '.join(DISTANCES)}")
        if target not in TARGETS:
            raise ConfigError(f"unknown distill.target {target!r}; choose one of {', '.join(TARGETS)}")
        if solver not in SOLVERS:
            raise ConfigError(f"unknown distill.solver {solver!r}; choose one of {', '.join(SOLVERS)}")
        if not 0.0 <= ema_decay < 1.0:
            raise ConfigError(f"distill.ema_decay must lie in [0, 1), got {ema_decay}")
        self.process, self.teacher = process, teacher
        self.grid = consistency_grid(process, steps, spacing)
        _, s = _alpha_s(process, self.grid)
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"unknown distill.weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
        # lambda_n = 1 / (s_{n+1} - s_n) (iCT) or 1
        self.weights = 1.0 / (s[1:] - s[:-1]) if weighting == "ict" else torch.ones(len(s) - 1, dtype=torch.float64)
        self.solver, self.distance, self.target, self.ema_decay = solver, distance, target, float(ema_decay)
        self._target_model: nn.Module | None = None
        self._pending: dict[str, Tensor] | None = None

    def _target(self, model: nn.Module) -> nn.Module:
        """The target network: the student itself (stop-gradient) or an EMA copy of it, updated each call."""
        student = getattr(model, "module", model)  # DDP
        if self.target == "stopgrad":
            return student
        if self._target_model is None:
            self._target_model = _plain_copy(student).requires_grad_(False)
            if self._pending is None:  # the first call: the target is the student
                return self._target_model
            # resumed: the target as saved after the last step, then this step's update as in an unbroken run
            self._target_model.load_state_dict(self._pending)
            self._pending = None
        with torch.no_grad():
            for p_t, p in zip(self._target_model.parameters(), student.parameters()):
                p_t.lerp_(p.detach(), 1.0 - self.ema_decay)
        return self._target_model

    def state_dict(self) -> dict[str, Tensor]:
        """The EMA target's weights (empty with a stop-gradient target), for exact resume."""
        return {} if self._target_model is None else self._target_model.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the EMA target (made from the student at the next call, then given these weights)."""
        self._pending = dict(state) if state else None

    def __call__(self, model: nn.Module, x0: Tensor, class_labels: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        batch, device = x0.shape[0], x0.device
        gen_device = generator.device if generator is not None else device
        n = torch.randint(0, len(self.grid) - 1, (batch,), generator=generator, device=gen_device).to(device)
        eps = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(device)
        grid = self.grid.to(device)
        t_next, t = grid[n + 1], grid[n]
        x_next = self.process.noise(x0, t_next, eps)
        with torch.no_grad():
            x_hat = teacher_step(self.process, self.teacher, x_next, t_next, t, self.solver, class_labels)
            target = _x0(self.process, self._target(model), x_hat, t, class_labels)
        pred = _x0(self.process, model, x_next, t_next, class_labels)
        diff2 = (pred.float() - target.float()).flatten(1).pow(2)
        if self.distance == "l2":
            d = diff2.mean(1)
        else:
            c = 0.00054 * math.sqrt(diff2.shape[1])
            d = (diff2.sum(1) + c * c).sqrt() - c
        return self.weights.to(device)[n].float() * d


__all__ = ["ConsistencyDistillation", "consistency_grid", "teacher_step", "SOLVERS", "DISTANCES",
           "TARGETS"]
