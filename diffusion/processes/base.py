r"""The Process protocol: how data is noised.

Every process here is a Gaussian corruption

    q(x_t | x_0) = N(x_t; alpha(t) x_0, sigma(t)^2 I),

which is also the marginal of a linear Ito SDE (Song et al. 2021, "Score-Based Generative Modeling
through Stochastic Differential Equations", eq. 5)

    dx = f(t) x dt + g(t) dW,   f(t) = d log alpha / dt,   g(t)^2 = d sigma^2/dt - 2 f(t) sigma^2.

Samplers and likelihoods ask a process only for alpha, sigma, f, g, its prior and its time grid, so
none of them knows which process it has. Time is the process's own: the step index for DDPM, t in
(0, 1] for the SDEs. Coefficients are computed in float64 and returned in the dtype of ``t``.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.buildable import buildable
from diffusion.utils import append_dims

SPACINGS = ("uniform", "quadratic", "logsnr", "karras")
#: a capability (``Process.offers``): a discrete chain of trained steps, whose Bayes posterior the ancestral
#: ``ddpm`` sampler, the discrete bound and ``VLBLoss`` walk
MARKOV_CHAIN = "markov_chain"


class Process(ABC):
    #: short name used in configs and error messages
    name: str = "process"
    #: capabilities beyond the Gaussian marginals and the SDE, which every process has (``MARKOV_CHAIN``)
    offers: frozenset[str] = frozenset()
    #: the clock the probability-flow ODE is best solved over: ``t``, or ``log_snr`` where f and g^2 jump in t
    ode_clock: str = "t"
    #: the loss (configs/loss/<name>) this process trains with when the config says ``loss: auto``
    default_loss: str = "eps_mse"
    #: largest time: the prior lives here
    t_max: float = 1.0
    #: smallest time where samplers evaluate the model before the final denoising step
    t_min: float = 1e-3
    #: smallest time used by training and by likelihoods (Song et al. use 1e-5)
    t_eps: float = 1e-5
    #: the grid ``timesteps(spacing="default")`` walks: what a sampler uses unless told otherwise
    default_spacing: str = "uniform"

    def __init_subclass__(cls, **kwargs):
        # every process may be rebuilt from a checkpoint's config (diffusion.buildable)
        super().__init_subclass__(**kwargs)
        buildable(cls)

    # ---- the marginal q(x_t | x_0) ------------------------------------------------------------
    @abstractmethod
    def log_alpha(self, t: Tensor) -> Tensor:
        """log alpha(t), computed in float64."""

    @abstractmethod
    def sigma2(self, t: Tensor) -> Tensor:
        """sigma(t)^2, computed in float64; finite (and >= 0) for every real t."""

    @abstractmethod
    def f_coef(self, t: Tensor) -> Tensor:
        """f(t) = d log alpha/dt, the linear drift coefficient: f(x, t) = f(t) x."""

    @abstractmethod
    def g2(self, t: Tensor) -> Tensor:
        """g(t)^2 = d sigma^2/dt - 2 f(t) sigma^2, the squared diffusion coefficient."""

    def alpha(self, t: Tensor) -> Tensor:
        """Scale of x_0 in x_t."""
        return self.log_alpha(t.double()).exp().to(_float_dtype(t))

    def sigma(self, t: Tensor) -> Tensor:
        """Standard deviation of x_t given x_0."""
        return self.sigma2(t.double()).clamp_min(0).sqrt().to(_float_dtype(t))

    def log_snr(self, t: Tensor) -> Tensor:
        """lambda(t) = log(alpha^2 / sigma^2), decreasing in t."""
        t64 = t.double()
        return (2 * self.log_alpha(t64) - self.sigma2(t64).log()).to(_float_dtype(t))

    def f(self, x: Tensor, t: Tensor) -> Tensor:
        """Forward drift f(x, t) = f(t) x; ``t`` has shape (batch,)."""
        return append_dims(self.f_coef(t.double()).to(x.dtype), x.ndim) * x

    def g(self, t: Tensor) -> Tensor:
        """Forward diffusion coefficient g(t)."""
        return self.g2(t.double()).clamp_min(0).sqrt().to(_float_dtype(t))

    def div_f(self, x: Tensor, t: Tensor) -> Tensor:
        """Divergence of the drift, f(t) * dim, shape (batch,)."""
        return self.f_coef(t.double()).to(x.dtype) * x[0].numel()

    def noise(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_t = alpha(t) x_0 + sigma(t) eps."""
        a = append_dims(self.alpha(t).to(x0.dtype), x0.ndim)
        s = append_dims(self.sigma(t).to(x0.dtype), x0.ndim)
        return a * x0 + s * eps

    def noise_label(self, t: Tensor) -> Tensor:
        """The scalar a network embeds for time t (its conditioning signal); see ``parameterization``."""
        return t

    # ---- prior ----------------------------------------------------------------------------------
    def prior_std(self) -> float:
        """Std of the prior N(0, s^2 I): 1 for the variance-preserving family, sigma_max for VE."""
        return 1.0

    def prior_sample(self, shape, generator: torch.Generator | None = None, device=None,
                     dtype: torch.dtype = torch.float32) -> Tensor:
        """A draw from the prior p_T at t_max."""
        return self.prior_std() * torch.randn(shape, generator=generator, device=device, dtype=dtype)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """log N(x; 0, s^2 I) summed over all but the batch dimension, shape (batch,)."""
        s = self.prior_std()
        d = x[0].numel()
        return -0.5 * (x.flatten(1).double() ** 2).sum(1).to(x.dtype) / s**2 - d * (math.log(s) + 0.5 * math.log(2 * math.pi))

    # ---- time -----------------------------------------------------------------------------------
    def sample_t(self, batch: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """Training times, uniform on [t_eps, t_max] (float32, shape (batch,))."""
        u = torch.rand(batch, generator=generator, device=device)
        return self.t_eps + (self.t_max - self.t_eps) * u

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        """Inverse of ``log_snr`` on [t_eps, t_max] by bisection in float64 (closed forms override this)."""
        lam = lam.double()
        lo = torch.full_like(lam, self.t_eps)
        hi = torch.full_like(lam, self.t_max)
        for _ in range(64):
            mid = (lo + hi) / 2
            above = self.log_snr(mid) > lam  # log_snr decreases in t: the root lies later
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return (lo + hi) / 2

    def timesteps(self, steps: int, spacing: str = "uniform", rho: float = 7.0, t_min: float | None = None) -> Tensor:
        """``steps`` model times, float64, descending from t_max to t_min.

        A sampler walks these and then takes one last step to the clean data (alpha=1, sigma=0).
        spacing: ``uniform`` in t, ``quadratic`` in t (denser near the data, DDIM paper sec. D.2),
        ``logsnr`` (uniform in lambda, the DPM-Solver choice) or ``karras`` (Karras et al. 2022 eq. 5
        in sigma/alpha with exponent rho); ``default`` is the process's ``default_spacing`` (karras for EDM,
        uniform for the others).
        """
        if steps < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        if spacing == "default":
            spacing = self.default_spacing
        t_lo = self.t_min if t_min is None else t_min
        t_hi = self.t_max
        if steps == 1:
            return torch.tensor([t_hi], dtype=torch.float64)
        u = torch.linspace(0, 1, steps, dtype=torch.float64)
        if spacing in ("uniform", "quadratic"):
            t = t_hi + (t_lo - t_hi) * u if spacing == "uniform" else t_lo + (t_hi - t_lo) * (1 - u) ** 2
            t[0], t[-1] = t_hi, t_lo  # exact ends, free of rounding
            return t
        ends = torch.tensor([t_hi, t_lo], dtype=torch.float64)
        lam_hi, lam_lo = self.log_snr(ends).tolist()  # lambda at t_max (small) and t_min (large)
        if spacing == "logsnr":
            lam = lam_hi + (lam_lo - lam_hi) * u
        elif spacing == "karras":
            # sigma/alpha = exp(-lambda/2)
            s_max, s_min = math.exp(-lam_hi / 2), math.exp(-lam_lo / 2)
            s = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
            lam = -2 * s.log()
        else:
            raise ConfigError(f"unknown spacing {spacing!r}; choose one of default, {', '.join(SPACINGS)}")
        t = self.t_from_log_snr(lam)
        t[0], t[-1] = t_hi, t_lo
        return t

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _float_dtype(t: Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() else torch.get_default_dtype()


def posterior(process: Process, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Coefficients of the Gaussian posterior q(x_s | x_t, x_0) for s < t (Bayes' rule, see ``ddpm.py``):

        mean = c_x0 * x_0 + c_xt * x_t,   var = sigma_{t|s}^2 sigma_s^2 / sigma_t^2,
        c_x0 = alpha_s sigma_{t|s}^2 / sigma_t^2,   c_xt = alpha_{t|s} sigma_s^2 / sigma_t^2,
        alpha_{t|s} = alpha_t / alpha_s,   sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2.

    Returns (c_x0, c_xt, var) in float64 with the shape of t. At s = clean (sigma_s = 0) it returns
    c_x0 = 1/alpha_s, c_xt = 0, var = 0.
    """
    t, s = t.double(), s.double()
    log_a_t, log_a_s = process.log_alpha(t), process.log_alpha(s)
    s2_t, s2_s = process.sigma2(t).clamp_min(0), process.sigma2(s).clamp_min(0)
    a_s = log_a_s.exp()
    a_ts = (log_a_t - log_a_s).exp()
    s2_ts = (s2_t - a_ts**2 * s2_s).clamp_min(0)
    c_x0 = a_s * s2_ts / s2_t
    c_xt = a_ts * s2_s / s2_t
    var = s2_ts * s2_s / s2_t
    return c_x0, c_xt, var
