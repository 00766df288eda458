r"""Reverse-time SDE samplers: Euler-Maruyama over a family of SDEs, and predictor-corrector (Song et al. 2021).

**A family of reverse SDEs with the forward marginals.** The forward SDE dx = f(x,t) dt + g(t) dW has
marginals p_t solving the Fokker-Planck equation

    dp/dt = -div(f p) + 1/2 g^2 Lap(p).

Because p score = grad p (score = grad log p), div(p score) = Lap(p), so for any lambda >= 0

    dp/dt = -div([f - (1 + lambda^2)/2 g^2 score] p) - lambda^2/2 g^2 Lap(p):

moving lambda^2/2 g^2 of score into the drift adds +lambda^2/2 g^2 div(p score) = +lambda^2/2 g^2 Lap(p), and
the explicit -lambda^2/2 g^2 Lap(p) cancels it. Read backwards in time (tau = T - t, so d/dtau = -d/dt) the
right-hand side is the Fokker-Planck equation of an SDE with drift -(f - (1+lambda^2)/2 g^2 score) and
diffusion lambda g. Written in t (dt < 0) with a reverse-time Brownian motion W-bar:

    dx = [f(x,t) - (1 + lambda^2)/2 g(t)^2 score(x,t)] dt + lambda g(t) dW-bar,

whose marginals are p_t for every lambda. lambda = 1 is the reverse SDE (Anderson 1982; Song et al. eq. 6),
lambda = 0 the probability-flow ODE (Song et al. eq. 13). Larger lambda injects more noise and corrects
more of the accumulated error (Karras et al. 2022, sec. 4, "churn").

The score is -eps / sigma. Every sampler ends at t_min with the denoising step x0_pred = (x - sigma eps)/alpha
(no noise; Song et al.'s "denoise" option, here Tweedie's estimate from the same model).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import trange

from diffusion.errors import ConfigError
from diffusion.processes.base import Process
from diffusion.samplers.registry import register_sampler
from diffusion.samplers.common import (EpsFn, alpha_sigma, check_choice, eps_and_x0, f_g2, model_time, noise_like,
                                       transition)
from diffusion.samplers.grids import Timesteps, grid

PREDICTORS = ("reverse_diffusion", "euler_maruyama")


@register_sampler()
def euler_maruyama(process: Process, model: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None = None,
                   progress: bool = False, *, noise_scale: float = 1.0, spacing: str = "default",
                   timesteps: Timesteps = None) -> Tensor:
    """Euler-Maruyama on dx = [f - (1 + lambda^2)/2 g^2 score] dt + lambda g dW-bar, lambda = ``noise_scale``.

    ``steps`` model evaluations: steps - 1 Euler steps over the grid, then the final denoising step.
    """
    if noise_scale < 0:
        raise ConfigError(f"noise_scale must be >= 0, got {noise_scale}")
    ts = grid(process, steps, spacing, timesteps)
    for i in trange(len(ts) - 1, disable=not progress, desc="euler_maruyama"):
        x = _em_step(process, model, x, ts[i], ts[i + 1], noise_scale, generator)
    return eps_and_x0(process, model, x, ts[-1])[1]


def _em_step(process: Process, model: EpsFn, x: Tensor, t: float, s: float, noise_scale: float,
             generator: torch.Generator | None) -> Tensor:
    """One Euler-Maruyama step t -> s < t of the lambda-family reverse SDE."""
    dt = s - t
    f, g2 = f_g2(process, t)
    _, sigma = alpha_sigma(process, t)
    score = -model(x, model_time(t, x)).to(x.dtype) / sigma
    x = x + (f * x - (1 + noise_scale**2) / 2 * g2 * score) * dt
    if noise_scale > 0:
        x = x + noise_scale * math.sqrt(g2 * -dt) * noise_like(x, generator)
    return x


@register_sampler()
def pc(process: Process, model: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None = None,
       progress: bool = False, *, predictor: str = "reverse_diffusion", snr: float = 0.16,
       corrector_steps: int = 1, spacing: str = "default", timesteps: Timesteps = None) -> Tensor:
    r"""Predictor-corrector sampling (Song et al. 2021, sec. 4.2, appendix G algorithms 2-5): at every grid time,
    ``corrector_steps`` Langevin steps targeting p_t, then a predictor step to the next time (the last time ends
    with the denoising step instead). NFE = steps * (1 + corrector_steps).

    Predictors, from t to s < t with alpha_{t|s}, sigma_{t|s}^2 of q(x_t | x_s):
      ``reverse_diffusion`` (appendix E: x_s = x_t - f_disc + G^2 score + G z with the forward discretization
      f_disc = (alpha_{t|s} - 1) x_t, G^2 = sigma_{t|s}^2; for VP that is 1 - sqrt(1 - beta_i), beta_i and
      for VE sigma_t^2 - sigma_s^2, as in the paper), or ``euler_maruyama`` (the reverse SDE, lambda = 1).
    Langevin corrector (alg. 4 VE, 5 VP): x <- x + eps_L score + sqrt(2 eps_L) z with the step size set by the
      signal-to-noise ratio r = ``snr``: eps_L = 2 a (r ||z|| / ||score||)^2 (norms averaged over the batch),
      a = alpha_{t|s}^2 (the paper's alpha_i = 1 - beta_i; 1 on VE).
    """
    check_choice("predictor", predictor, PREDICTORS)
    if snr <= 0 or corrector_steps < 0 or int(corrector_steps) != corrector_steps:
        raise ConfigError(f"need snr > 0 and an integer corrector_steps >= 0, "
                         f"got snr={snr}, corrector_steps={corrector_steps}")
    ts = grid(process, steps, spacing, timesteps)
    for i in trange(len(ts), disable=not progress, desc="pc"):
        t, s = ts[i], ts[i + 1] if i + 1 < len(ts) else None
        alpha_t, sigma_t = alpha_sigma(process, t)
        alpha_ts, sigma2_ts = transition(process, t, s) if s is not None else (alpha_t, 0.0)
        for _ in range(int(corrector_steps)):
            x = _langevin_step(model, x, t, sigma_t, snr, alpha_ts**2, generator)
        if s is None:
            return eps_and_x0(process, model, x, t)[1]
        if predictor == "euler_maruyama":
            x = _em_step(process, model, x, t, s, 1.0, generator)
        else:
            score = -model(x, model_time(t, x)).to(x.dtype) / sigma_t
            x = (2 - alpha_ts) * x + sigma2_ts * score + math.sqrt(sigma2_ts) * noise_like(x, generator)
    return x


def _langevin_step(model: EpsFn, x: Tensor, t: float, sigma: float, snr: float, a: float,
                   generator: torch.Generator | None) -> Tensor:
    score = -model(x, model_time(t, x)).to(x.dtype) / sigma
    z = noise_like(x, generator)
    grad_norm = score.flatten(1).norm(dim=1).mean()
    noise_norm = z.flatten(1).norm(dim=1).mean()
    step = 2 * a * (snr * noise_norm / grad_norm) ** 2
    return x + step * score + (2 * step).sqrt() * z


__all__ = ["euler_maruyama", "pc", "PREDICTORS"]
