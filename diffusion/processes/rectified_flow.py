r"""Rectified flow / flow matching (Liu, Gong & Liu 2022; Lipman et al. 2023; Esser et al. 2024, "Scaling
Rectified Flow Transformers", sec. 2-3): the straight line from data to noise,

    x_t = (1 - t) x_0 + t eps,   alpha(t) = 1 - t,  sigma(t) = t,   prior N(0, t_max^2 I) = N(0, sigma(t_max)^2 I),

whose conditional velocity dx_t/dt = eps - x_0 is what flow matching regresses (``losses.FlowMatching``,
``prediction: velocity``). As a linear SDE (``base.py``):

    f(t) = d log alpha / dt = -1 / (1 - t),   g(t)^2 = d sigma^2/dt - 2 f sigma^2 = 2t / (1 - t),

and the probability-flow ODE is dx/dt = (eps(x, t) - x) / (1 - t) = eps - x0_pred, the flow's velocity.

**The ends.** alpha(1) = 0 makes f and g^2 infinite at t = 1, and sigma(0) = 0 makes the score infinite at
t = 0, so the process lives on [t_eps, t_max] = [1e-3, 1 - 1e-3] by default (coefficients are evaluated at t
clamped into [0, t_max], which keeps every one finite wherever a solver probes). Two mismatches follow:

* at t_max the marginal q_T = law of delta x_0 + (1 - delta) eps, delta = 1 - t_max, is not the prior. The
  prior's std is sigma(t_max) = 1 - delta, as VE's and EDM's is sigma_max (N(0, I) would add a per-point
  error d delta - delta |x|^2 of order delta sqrt(d), 1e-3 nats/dim at delta = 1e-3), so only the shrunken data
  differ: KL(q_T || prior) <= E_x0 KL(N(delta x_0, (1 - delta)^2 I) || N(0, (1 - delta)^2 I))
  = delta^2 E|x_0|^2 / (2 (1 - delta)^2), ~5e-7 E|x_0|^2 nats at delta = 1e-3. That is the mean error of the
  prior term of ``ode_nll`` / ``variational_bound``; per point it is delta x_T . E[x_0] / (1 - delta)^2
  + O(delta^2) (so O(delta^2) for centred data). ``tests/processes/test_edm_rf.py`` and ``tests/likelihood/test_edm_rf.py`` measure both;
* likelihoods are of p_{t_eps}, the data blurred by noise of std t_eps = 1e-3 (as VP's sigma(t_eps) ~ 1e-3),
  not of the data itself.

Training times are uniform on [t_eps, t_max] (``t_sampling="uniform"``) or logit-normal (SD3 sec. 3.1,
``t_sampling="logit_normal"``: t = sigmoid(logit_mean + logit_std n), clamped into [t_eps, t_max]).
"""
from __future__ import annotations

import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.processes.base import Process

T_SAMPLINGS = ("uniform", "logit_normal")


class RectifiedFlow(Process):
    name = "rectified_flow"
    default_loss = "flow_matching"

    def __init__(self, t_sampling: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0,
                 t_min: float = 2e-3, t_eps: float = 1e-3, t_max: float = 0.999):
        if t_sampling not in T_SAMPLINGS:
            raise ConfigError(f"unknown t_sampling {t_sampling!r}; choose one of {', '.join(T_SAMPLINGS)}")
        if not 0 < t_eps <= t_min < t_max < 1:
            raise ConfigError(f"need 0 < t_eps <= t_min < t_max < 1 (alpha(1) = 0: f and g^2 blow up there), "
                             f"got t_eps={t_eps}, t_min={t_min}, t_max={t_max}")
        if logit_std <= 0:
            raise ConfigError(f"logit_std must be > 0, got {logit_std}")
        self.t_sampling, self.logit_mean, self.logit_std = t_sampling, float(logit_mean), float(logit_std)
        self.t_min, self.t_eps, self.t_max = float(t_min), float(t_eps), float(t_max)

    def _clamp(self, t: Tensor) -> Tensor:
        return t.clamp(0, self.t_max)

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.log1p(-self._clamp(t))

    def sigma2(self, t: Tensor) -> Tensor:
        return self._clamp(t) ** 2

    def f_coef(self, t: Tensor) -> Tensor:
        return -1 / (1 - self._clamp(t))

    def g2(self, t: Tensor) -> Tensor:
        t = self._clamp(t)
        return 2 * t / (1 - t)

    def prior_std(self) -> float:
        return self.t_max

    def noise_label(self, t: Tensor) -> Tensor:
        # the DDPM-like step scale (SD3 embeds 1000 t), so one network embedding serves every process
        return 999.0 * t

    def sample_t(self, batch: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """Training times: uniform on [t_eps, t_max], or logit-normal clamped into it (float32, shape (batch,))."""
        if self.t_sampling == "uniform":
            return super().sample_t(batch, generator, device)
        n = torch.randn(batch, generator=generator, device=device)
        return torch.sigmoid(self.logit_mean + self.logit_std * n).clamp(self.t_eps, self.t_max)

    def t_from_log_snr(self, lam: Tensor) -> Tensor:
        # lambda = 2 log((1 - t) / t)  =>  t = sigmoid(-lambda / 2)
        return torch.sigmoid(-0.5 * lam.double())

    def __repr__(self) -> str:
        return f"RectifiedFlow(t_sampling={self.t_sampling!r})"


__all__ = ["RectifiedFlow", "T_SAMPLINGS"]
