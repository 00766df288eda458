r"""Analytic-DPM: the KL-optimal isotropic reverse variance (Bao, Li, Zhu & Zhang 2022, ICLR, thm. 1 and 2).

A reverse step s < t of the DDIM family keeps the Gaussian q_lambda(x_s | x_t, x_0) with variance lambda^2 and
mean alpha_s x_0 + sqrt(sigma_s^2 - lambda^2) (x_t - alpha_t x_0) / sigma_t, and the model puts its estimate
x0_pred in place of x_0 (lambda^2 = beta_tilde gives the Bayes posterior, i.e. DDPM; eta^2 beta_tilde DDIM).
Its mean then differs from the posterior's by D (eps_pred - eps), with

    D = sigma_t / alpha_{t|s} - sqrt(sigma_s^2 - lambda^2),       alpha_{t|s} = alpha_t / alpha_s,

and the expected KL(q_lambda || N(mean_p, v I)) is minimised by v = lambda^2 + D^2 E|eps - eps_pred|^2 / d.
For the optimal eps_pred = E[eps | x_t], E|eps - eps_pred|^2 = d - E|eps_pred|^2, which gives the paper's

    sigma*^2 = lambda^2 + D^2 (1 - Gamma_t),        Gamma_t = E|eps_theta(x_t, t)|^2 / d        (thm. 1)

(in the paper's notation D^2 = (sqrt(bbar_n / a_n) - sqrt(bbar_{n-1} - lambda_n^2))^2). Gamma is one Monte
Carlo pass of the model over training data (``estimate_gamma``). Because the model is imperfect, the estimate is
clipped to the interval that holds for the true optimum (thm. 2):

    lambda^2 <= sigma*^2 <= lambda^2 + D^2 min(1, alpha_t^2 r^2 / sigma_t^2),

the second bound for data in [a, b]^d, r = (b - a) / 2 (Cov[x_0 | x_t] <= r^2 per dimension). The last step
to the clean data (the decoder; x_s = x_0 exactly, lambda = 0, D = sigma_t / alpha_t) has lower bound 0 in
theory; we floor it at ``DECODER_FLOOR`` D^2 so that a model with Gamma >= 1 there gives a finite (if loose) bound.

Any variance fixed before seeing the test data gives a valid variational bound, so Gamma may be estimated on a
coarse grid and interpolated (``Gamma.at``), and from training rather than test images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.processes.base import MARKOV_CHAIN, Process
from diffusion.utils import read_json, write_json

#: the decoder variance is at least this fraction of its upper bound sigma_0^2 / alpha_0^2 (see module docstring)
DECODER_FLOOR = 1e-2
#: data bounds [a, b] of images scaled to [-1, 1] (the paper's clipping assumes bounded data)
IMAGE_BOUNDS = (-1.0, 1.0)


@dataclass
class Gamma:
    """Gamma_t = E|eps_theta(x_t, t)|^2 / d on a grid of process times (descending), with its Monte Carlo
    standard error, and the mean squared residual E|eps - eps_theta|^2 / d from the same evaluations."""

    times: Tensor  # (K,) float64, descending
    values: Tensor  # (K,) float64
    stderr: Tensor  # (K,) float64
    residual: Tensor  # (K,) float64, E|eps - eps_theta|^2 / d (a diagnostic: = 1 - Gamma for the optimal model)
    images_per_step: int
    process: str  # repr of the process it was estimated under
    meta: dict = field(default_factory=dict)

    def at(self, t: Tensor | float) -> Tensor:
        """Gamma at process times ``t``, float64: exact on the grid, linear in t between grid points, constant
        beyond its ends."""
        t = torch.as_tensor(t, dtype=torch.float64)
        xs, ys = self.times.flip(0).numpy(), self.values.flip(0).numpy()
        values = np.interp(np.atleast_1d(t.detach().cpu().numpy()), xs, ys)
        return torch.from_numpy(values).reshape(t.shape).to(t.device)

    def to_dict(self) -> dict[str, Any]:
        return {"times": self.times.tolist(), "gamma": self.values.tolist(), "stderr": self.stderr.tolist(),
                "residual": self.residual.tolist(), "images_per_step": self.images_per_step,
                "process": self.process, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Gamma":
        try:
            times, values = (torch.tensor(data[k], dtype=torch.float64) for k in ("times", "gamma"))
            stderr = torch.tensor(data.get("stderr", [float("nan")] * len(times)), dtype=torch.float64)
            residual = torch.tensor(data.get("residual", [float("nan")] * len(times)), dtype=torch.float64)
            gamma = cls(times, values, stderr, residual, int(data.get("images_per_step", 0)),
                        str(data.get("process", "")), dict(data.get("meta", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"not a Gamma file (needs lists 'times' and 'gamma'): {e}") from None
        if times.ndim != 1 or times.shape != values.shape or len(times) == 0:
            raise ConfigError("a Gamma file needs non-empty 'times' and 'gamma' lists of equal length")
        if len(times) > 1 and not bool((times[1:] < times[:-1]).all()):
            raise ConfigError("a Gamma file's 'times' must be strictly descending")
        return gamma

    def save(self, path: str | Path) -> Path:
        """JSON (no code runs when it is read back)."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Gamma":
        return cls.from_dict(read_json(path, f"no Gamma file at {path}; estimate one with `python evaluate.py "
                                             "ckpt=<run> task=likelihood` (writes <run>/eval/gamma_ema.json)",
                                       "a Gamma file"))


def gamma_path(run_dir: str | Path, ema: bool = True) -> Path:
    """Where the command line keeps a checkpoint's Gamma: ``<run>/eval/gamma_ema.json`` (``gamma_raw.json``)."""
    return Path(run_dir) / "eval" / f"gamma_{'ema' if ema else 'raw'}.json"


def sampler_gamma(options: dict, run_dir: str | Path, ema: bool = True) -> dict:
    """Sampler options with ``gamma`` filled in from the run's stored Gamma where ``variance=analytic`` asks for one
    and none was given (``sampler.gamma=<file>`` wins). ValueError naming the fix when there is none."""
    if options.get("variance") != "analytic" or options.get("gamma") is not None:
        return options
    path = gamma_path(run_dir, ema)
    if not path.is_file():
        raise ConfigError(f"sampler.variance=analytic needs Gamma and {path} does not exist: run `python evaluate.py "
                         f"ckpt={run_dir} task=likelihood{'' if ema else ' ema=false'}` once (it stores it there), "
                         "or pass sampler.gamma=<file>")
    return {**options, "gamma": str(path)}


def as_gamma(gamma: "Gamma | str | Path | None") -> Gamma | None:
    """A ``Gamma``, or one loaded from a JSON path (what a config can hold)."""
    if gamma is None or isinstance(gamma, Gamma):
        return gamma
    if isinstance(gamma, (str, Path)):
        return Gamma.load(gamma)
    raise TypeError(f"gamma must be a Gamma (likelihood.estimate_gamma) or the path of a saved one, got {type(gamma).__name__}")


def estimate_gamma(process: Process, model: Callable[[Tensor, Tensor], Tensor], x_train: Tensor,
                   steps: int | None = None, generator: torch.Generator | None = None, *,
                   spacing: str = "uniform", images_per_step: int | None = None, batch_size: int = 256,
                   progress: bool = False) -> Gamma:
    r"""Gamma_t = E|eps_theta(x_t, t)|^2 / d at each time of the ``steps``-step grid ``process.timesteps(steps,
    spacing)`` (default: all N steps of a DDPM process), x_t = alpha_t x + sigma_t eps with x drawn from the
    training images ``x_train`` (floats in the model's scale) and eps from ``generator``.

    ``images_per_step``: None uses every image of ``x_train`` at every step (steps * len(x_train) model rows);
    m cycles through ``x_train`` with m images per step (steps * m rows), a cheap estimate on long grids.
    Rows are batched ``batch_size`` at a time, mixing steps (the model takes one time per row).
    """
    if steps is None:
        if MARKOV_CHAIN not in process.offers:
            raise ConfigError("estimate_gamma needs steps=<K> (the sampler's grid) for a continuous-time process")
        steps = process.num_steps
    if not x_train.is_floating_point():
        raise ConfigError(f"x_train must be floating point in the model's scale (dequantize uint8 images first), got {x_train.dtype}")
    n = x_train.shape[0]
    if n < 1:
        raise ConfigError("estimate_gamma needs at least one training image")
    m = n if images_per_step is None else int(images_per_step)
    if m < 1:
        raise ConfigError(f"images_per_step must be a positive integer or None, got {images_per_step!r}")
    times = process.timesteps(int(steps), spacing)
    K, d = len(times), x_train[0].numel()
    step_idx = torch.arange(K).repeat_interleave(m)
    img_idx = (torch.arange(K * m) % n) if images_per_step is not None else torch.arange(m).repeat(K)
    sq = torch.empty(K * m, dtype=torch.float64)
    res = torch.empty(K * m, dtype=torch.float64)
    rows = range(0, K * m, batch_size)
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc="Gamma", unit="batch", dynamic_ncols=True)
    with torch.no_grad():
        for lo in rows:
            sl = slice(lo, min(lo + batch_size, K * m))
            x = x_train[img_idx[sl]]
            t = times[step_idx[sl]].to(x.device)
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            eps_pred = model(process.noise(x, t, eps), t.to(x.dtype)).to(x.dtype)
            sq[sl] = eps_pred.flatten(1).double().pow(2).sum(1).cpu() / d
            res[sl] = (eps_pred - eps).flatten(1).double().pow(2).sum(1).cpu() / d
    sq, res = sq.reshape(K, m), res.reshape(K, m)
    stderr = sq.std(1) / math.sqrt(m) if m > 1 else torch.full((K,), float("nan"), dtype=torch.float64)
    return Gamma(times.double(), sq.mean(1), stderr, res.mean(1), m, repr(process),
                 {"steps": int(steps), "spacing": spacing, "images": n, "nfe_rows": K * m})


def optimal_variance(process: Process, gamma: Gamma, t: Tensor, s: Tensor | None, lambda2: Tensor | None = None,
                     data_bounds: tuple[float, float] | None = IMAGE_BOUNDS) -> Tensor:
    r"""The clipped Analytic-DPM variance sigma*^2 of the step x_t -> x_s (module docstring), float64, shape of t.

    ``s=None`` is the final step to the clean data (the decoder). ``lambda2``: the variance of the DDIM-family
    posterior (default beta_tilde, the Bayes posterior: DDPM); must be <= sigma_s^2. ``data_bounds=None`` drops
    the bounded-data clip (for data not in a known box)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    alpha2_t, sigma2_t = (2 * process.log_alpha(t)).exp(), process.sigma2(t)
    if s is None:
        lam2 = torch.zeros_like(t)
        D2 = sigma2_t / alpha2_t
    else:
        s = torch.as_tensor(s, dtype=torch.float64)
        from diffusion.processes.base import posterior

        alpha2_s, sigma2_s = (2 * process.log_alpha(s)).exp(), process.sigma2(s)
        lam2 = posterior(process, t, s)[2] if lambda2 is None else torch.as_tensor(lambda2, dtype=torch.float64).expand_as(t)
        D2 = ((sigma2_t * alpha2_s / alpha2_t).sqrt() - (sigma2_s - lam2).clamp_min(0).sqrt()) ** 2
    explained = (1 - gamma.at(t)).to(t.device)
    cap = torch.ones_like(t)
    if data_bounds is not None:
        r = (data_bounds[1] - data_bounds[0]) / 2
        cap = torch.minimum(cap, alpha2_t * r**2 / sigma2_t)
    floor = torch.zeros_like(t) if s is not None else DECODER_FLOOR * cap
    return lam2 + D2 * explained.clamp(min=floor, max=cap)


__all__ = ["Gamma", "estimate_gamma", "optimal_variance", "as_gamma", "gamma_path", "sampler_gamma", "IMAGE_BOUNDS", "DECODER_FLOOR"]
