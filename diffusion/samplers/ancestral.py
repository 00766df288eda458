r"""Ancestral samplers: DDPM (Ho et al. 2020) and DDIM (Song, Meng & Ermon 2021).

Both replace x_0 in a Gaussian q(x_s | x_t, x_0) by the model's estimate
x0_pred = (x_t - sigma_t eps) / alpha_t and walk a grid t_max = t_0 > ... > t_min, then step to the data.

DDPM uses the Bayes posterior (``processes.posterior``; derivation in ``processes/ddpm.py``)

    x_s ~ N(c_x0 x0_pred + c_xt x_t, var),   var = beta_tilde = sigma_{t|s}^2 sigma_s^2 / sigma_t^2
                                             or  beta = sigma_{t|s}^2 (Ho et al.'s upper bound choice).

DDIM (Song et al. 2021, eq. 12) keeps the marginals q(x_s | x_0) for any eta in [0, 1]:

    x_s = alpha_s x0_pred + sqrt(sigma_s^2 - c^2) eps + c z,   c = eta sqrt(beta_tilde),

deterministic for eta = 0 (an exponential-integrator step of the probability-flow ODE) and, for eta = 1,
equal to the DDPM step with beta_tilde: sqrt(sigma_s^2 - beta_tilde) = alpha_{t|s} sigma_s^2 / sigma_t, which
turns the eps term into c_xt x_t + (c_x0 - alpha_s) x0_pred. DDIM needs only alpha and sigma, so it runs
on every process (on VE, alpha = 1, eta = 0 is Euler in sigma).

``variance="analytic"`` (both samplers; Bao et al. 2022, "Analytic-DPM") keeps each step's mean and replaces its
noise variance by the KL-optimal one, lambda^2 + D^2 (1 - Gamma_t) clipped (``likelihood/analytic.py``), where
lambda^2 is the family's own variance (beta_tilde for DDPM, eta^2 beta_tilde for DDIM; for eta = 0 this is the
paper's Analytic-DDIM, which is stochastic) and Gamma_t = E|eps_theta(x_t, t)|^2 / d comes from ``gamma=``
(``likelihood.estimate_gamma`` or the path of its saved JSON).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import trange

from diffusion.errors import ConfigError
from diffusion.likelihood.analytic import as_gamma, optimal_variance
from diffusion.processes.base import Process, posterior
from diffusion.samplers.registry import MARKOV_CHAIN, check_sampler, register_sampler
from diffusion.samplers.common import EpsFn, alpha_sigma, check_choice, model_time, noise_like, t64, transition
from diffusion.samplers.grids import Timesteps, grid

VARIANCES = ("beta_tilde", "beta", "analytic")
DDIM_VARIANCES = ("eta", "analytic")


def _gamma(process: Process, variance: str, gamma):
    """The Gamma an analytic variance needs (loaded from a path if given one); None for other variances."""
    if variance != "analytic":
        return None
    gamma = as_gamma(gamma)
    if gamma is None:
        raise ValueError("variance='analytic' needs gamma=<likelihood.estimate_gamma(...) or the path of a saved "
                         "one>; `python evaluate.py ckpt=<run> task=likelihood` writes <run>/eval/gamma_ema.json")
    if gamma.process and gamma.process != repr(process):
        raise ValueError(f"gamma was estimated under {gamma.process}, not {process!r}: estimate it for this model")
    return gamma


def _analytic_var(process: Process, gamma, t: float, s: float, lambda2: float) -> float:
    return float(optimal_variance(process, gamma, t64(t), t64(s), t64(lambda2)))


def ddpm_step(process: Process, x: Tensor, eps: Tensor, t: float, s: float | None,
              variance: str = "beta_tilde", noise: Tensor | None = None, gamma=None) -> Tensor:
    """One ancestral step x_t -> x_s with the Bayes posterior; s=None is the clean data (returns x0_pred).
    ``variance="analytic"`` needs a ``Gamma`` (``likelihood.estimate_gamma``)."""
    alpha_t, sigma_t = alpha_sigma(process, t)
    x0_pred = (x - sigma_t * eps) / alpha_t
    if s is None:
        return x0_pred
    c_x0, c_xt, var = (float(c) for c in posterior(process, t64(t), t64(s)))
    if variance == "beta":
        _, var = transition(process, t, s)  # sigma_{t|s}^2: beta_t itself when s = t - 1
    elif variance == "analytic":
        var = _analytic_var(process, gamma, t, s, var)
    mean = c_x0 * x0_pred + c_xt * x
    return mean if noise is None else mean + math.sqrt(var) * noise


def ddim_step(process: Process, x: Tensor, eps: Tensor, t: float, s: float | None,
              eta: float = 0.0, noise: Tensor | None = None, gamma=None) -> Tensor:
    """One DDIM step x_t -> x_s (Song et al. 2021, eq. 12); s=None is the clean data (returns x0_pred).
    With a ``Gamma`` the noise's variance is the analytic one for lambda^2 = eta^2 beta_tilde (mean unchanged)."""
    alpha_t, sigma_t = alpha_sigma(process, t)
    x0_pred = (x - sigma_t * eps) / alpha_t
    if s is None:
        return x0_pred
    alpha_s, sigma_s = alpha_sigma(process, s)
    _, _, beta_tilde = posterior(process, t64(t), t64(s))
    c = eta * math.sqrt(float(beta_tilde))
    x = alpha_s * x0_pred + math.sqrt(max(sigma_s**2 - c**2, 0.0)) * eps
    if gamma is not None:
        return x + math.sqrt(_analytic_var(process, gamma, t, s, c**2)) * noise
    return x if c == 0 else x + c * noise


@register_sampler(needs={MARKOV_CHAIN}, instead="ddim with eta=1 is the same posterior step")
def ddpm(process: Process, model: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None = None,
         progress: bool = False, *, variance: str = "beta_tilde", spacing: str = "uniform", gamma=None,
         timesteps: Timesteps = None) -> Tensor:
    """Ancestral sampling with the Bayes posterior; ``steps`` < N respaces the chain (Nichol & Dhariwal 2021),
    the posterior between grid neighbours being exact for any pair s < t. DDPM process only.
    variance: ``beta_tilde``, ``beta`` or ``analytic`` (Analytic-DPM; ``gamma``: a ``Gamma`` or its JSON path)."""
    check_sampler("ddpm", process)
    check_choice("variance", variance, VARIANCES)
    gamma = _gamma(process, variance, gamma)
    ts = grid(process, steps, spacing, timesteps)
    for i in trange(len(ts), disable=not progress, desc="ddpm"):
        s = ts[i + 1] if i + 1 < len(ts) else None
        eps = model(x, model_time(ts[i], x)).to(x.dtype)
        x = ddpm_step(process, x, eps, ts[i], s, variance, None if s is None else noise_like(x, generator), gamma)
    return x


@register_sampler()
def ddim(process: Process, model: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None = None,
         progress: bool = False, *, eta: float = 0.0, spacing: str = "default", variance: str = "eta",
         gamma=None, timesteps: Timesteps = None) -> Tensor:
    """DDIM with stochasticity eta in [0, 1] (0: deterministic; 1 on all N DDPM steps: DDPM itself).
    variance: ``eta`` (eta^2 beta_tilde) or ``analytic`` (Analytic-DPM with lambda^2 = eta^2 beta_tilde, stochastic
    for every eta; ``gamma``: a ``Gamma`` or its JSON path)."""
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"eta must be in [0, 1], got {eta}")
    check_choice("variance", variance, DDIM_VARIANCES)
    gamma = _gamma(process, variance, gamma)
    ts = grid(process, steps, spacing, timesteps)
    for i in trange(len(ts), disable=not progress, desc="ddim"):
        s = ts[i + 1] if i + 1 < len(ts) else None
        eps = model(x, model_time(ts[i], x)).to(x.dtype)
        noise = noise_like(x, generator) if (eta > 0 or gamma is not None) and s is not None else None
        x = ddim_step(process, x, eps, ts[i], s, eta, noise, gamma)
    return x


__all__ = ["ddpm", "ddim", "ddpm_step", "ddim_step", "VARIANCES", "DDIM_VARIANCES"]
