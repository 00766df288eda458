r"""Gaussian-mixture data with exact noised marginals: the closed form every test and notebook checks against.

If x_0 ~ sum_k w_k N(mu_k, Sigma_k), then under q(x_t | x_0) = N(alpha x_0, sigma^2 I)

    p_t(x) = sum_k w_k N(x; alpha mu_k, alpha^2 Sigma_k + sigma^2 I),

so its log-density, score grad log p_t and the ideal eps prediction -sigma grad log p_t are exact.
With Sigma_k = U_k diag(lambda_k) U_k^T computed once, every noise level costs only a projection.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from diffusion.processes.base import Process
from diffusion.utils import append_dims


class GaussianMixture:
    """A mixture of K Gaussians in d dimensions; data tensors may have any shape (batch, *dims) with prod(dims) = d."""

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)
        self.K, self.d = self.means.shape
        self.eigvals, self.eigvecs = torch.linalg.eigh(self.covs)  # (K, d), (K, d, d)

    @classmethod
    def random(cls, d: int, k: int = 3, spread: float = 1.0, scale: tuple[float, float] = (0.05, 0.3),
               seed: int = 0) -> "GaussianMixture":
        """A reproducible mixture with random means (std ``spread``), random rotations and per-axis
        standard deviations drawn log-uniformly from ``scale`` (narrow components for small values)."""
        g = torch.Generator().manual_seed(seed)
        means = spread * torch.randn(k, d, generator=g, dtype=torch.float64)
        q, _ = torch.linalg.qr(torch.randn(k, d, d, generator=g, dtype=torch.float64))
        lo, hi = math.log(scale[0]), math.log(scale[1])
        std = torch.exp(lo + (hi - lo) * torch.rand(k, d, generator=g, dtype=torch.float64))
        covs = q @ torch.diag_embed(std**2) @ q.transpose(1, 2)
        weights = 0.5 + torch.rand(k, generator=g, dtype=torch.float64)
        return cls(weights, means, covs)

    # ---- moments -------------------------------------------------------------------------------
    def mean(self) -> Tensor:
        return self.weights @ self.means

    def cov(self) -> Tensor:
        m = self.mean()
        dm = self.means - m
        return (self.weights[:, None, None] * (self.covs + dm[:, :, None] * dm[:, None, :])).sum(0)

    def sample(self, n: int, generator: torch.Generator | None = None, shape: tuple[int, ...] | None = None) -> Tensor:
        """n draws in float64, shaped (n, *shape) (default (n, d))."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.d, generator=generator, dtype=torch.float64)
        x = self.means[k] + torch.einsum("nij,nj->ni", self.eigvecs[k], self.eigvals[k].sqrt() * z)
        return x.reshape((n,) + (shape or (self.d,)))

    # ---- marginal and conditional of a subset of coordinates -----------------------------------
    def marginal(self, keep: Tensor) -> "GaussianMixture":
        """The mixture of the coordinates where ``keep`` (bool, d entries in any shape) is True: same weights,
        means mu_k[keep], covariances Sigma_k[keep, keep]."""
        keep = torch.as_tensor(keep, dtype=torch.bool).reshape(-1)
        return GaussianMixture(self.weights, self.means[:, keep], self.covs[:, keep][:, :, keep])

    def conditional(self, x: Tensor, known: Tensor) -> "GaussianMixture":
        r"""p(x_missing | x_known) in closed form, a mixture over the coordinates where ``known`` is False.

        x: one sample (d entries in any shape; only its known entries are read); known: bool, same size.
        Per component (Gaussian conditioning, e.g. Bishop 2006 eq. 2.81-2.82), with o = known, m = missing:

            mu_{m|o} = mu_m + S_mo S_oo^{-1} (x_o - mu_o),   S_{m|o} = S_mm - S_mo S_oo^{-1} S_om,

        and the weights by Bayes' rule, w_k' proportional to w_k N(x_o; mu_o,k, S_oo,k).
        """
        o = torch.as_tensor(known, dtype=torch.bool).reshape(-1)
        if o.numel() != self.d or bool(o.all()) or not bool(o.any()):
            raise ValueError(f"known must have {self.d} entries with some but not all True")
        m = ~o
        x_o = torch.as_tensor(x, dtype=torch.float64).reshape(-1)[o]
        s_oo, s_mo, s_mm = self.covs[:, o][:, :, o], self.covs[:, m][:, :, o], self.covs[:, m][:, :, m]
        gain = torch.linalg.solve(s_oo, s_mo.transpose(1, 2)).transpose(1, 2)  # S_mo S_oo^{-1} (S_oo symmetric)
        means = self.means[:, m] + torch.einsum("kij,kj->ki", gain, x_o - self.means[:, o])
        covs = s_mm - gain @ s_mo.transpose(1, 2)
        covs = (covs + covs.transpose(1, 2)) / 2
        log_w = self.weights.log() + self.marginal(o)._components(x_o[None], torch.ones(1), torch.zeros(1))[0][0]
        return GaussianMixture(torch.softmax(log_w, 0), means, covs)

    # ---- noised marginals ----------------------------------------------------------------------
    def _components(self, x: Tensor, alpha: Tensor, sigma: Tensor):
        """Per-sample, per-component log N(x; alpha mu_k, alpha^2 Sigma_k + sigma^2 I) and the
        component scores, all in float64. alpha, sigma: shape (batch,)."""
        xf = x.reshape(x.shape[0], -1).double()
        a = alpha.double().reshape(-1, 1, 1)
        var = a**2 * self.eigvals[None] + sigma.double().reshape(-1, 1, 1) ** 2  # (B, K, d)
        diff = xf[:, None, :] - a * self.means[None]  # (B, K, d)
        z = torch.einsum("kji,bkj->bki", self.eigvecs, diff)  # U_k^T diff
        log_n = -0.5 * ((z**2 / var).sum(-1) + var.log().sum(-1) + self.d * math.log(2 * math.pi))
        score_k = -torch.einsum("kij,bkj->bki", self.eigvecs, z / var)
        return log_n, score_k

    def log_prob(self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        """Exact log p_t(x) (summed over dimensions), shape (batch,), float64."""
        alpha, sigma = self._per_sample(x, alpha), self._per_sample(x, sigma)
        log_n, _ = self._components(x, alpha, sigma)
        return torch.logsumexp(log_n + self.weights.log(), dim=1)

    def responsibilities(self, x: Tensor, alpha: Tensor | float = 1.0, sigma: Tensor | float = 0.0) -> Tensor:
        """Posterior component probabilities p(k | x), shape (batch, K)."""
        alpha, sigma = self._per_sample(x, alpha), self._per_sample(x, sigma)
        log_n, _ = self._components(x, alpha, sigma)
        return torch.softmax(log_n + self.weights.log(), dim=1)

    def score(self, x: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
        """Exact grad_x log p_t(x), float64, shaped like x."""
        alpha, sigma = self._per_sample(x, alpha), self._per_sample(x, sigma)
        log_n, score_k = self._components(x, alpha, sigma)
        resp = torch.softmax(log_n + self.weights.log(), dim=1)
        return (resp[..., None] * score_k).sum(1).reshape(x.shape)

    def eps_model(self, process: Process) -> Callable[[Tensor, Tensor], Tensor]:
        """The ideal noise predictor eps(x_t, t) = -sigma(t) grad log p_t(x_t) under ``process``."""

        def model(x: Tensor, t: Tensor, **_) -> Tensor:
            t = t.reshape(-1).expand(x.shape[0]).double()
            alpha, sigma = process.alpha(t), process.sigma(t)
            return (-append_dims(sigma, x.ndim) * self.score(x, alpha, sigma)).to(x.dtype)

        return model

    def flow_map(self, process: Process, x: Tensor, t: float | Tensor, t_to: float | Tensor) -> Tensor:
        """The exact probability-flow ODE map from (x, t) to t_to, for one Gaussian (K = 1) alone: with
        Sigma = U diag(lambda) U^T, each eigen-direction is scaled by sqrt((alpha'^2 lambda + sigma'^2) /
        (alpha^2 lambda + sigma^2)) about the moving mean (the marginals stay Gaussian and the flow is linear),

            x' = alpha' mu + U diag(sqrt(...)) U^T (x - alpha mu).

        A mixture's flow has no closed form. float64, shaped like x; t, t_to: scalars or per sample."""
        if self.K != 1:
            raise ValueError(f"the flow map has a closed form for one Gaussian only, this mixture has {self.K}")
        t, t_to = self._per_sample(x, t), self._per_sample(x, t_to)
        a, s, a2, s2 = process.alpha(t), process.sigma(t), process.alpha(t_to), process.sigma(t_to)
        lam, u = self.eigvals[0], self.eigvecs[0]
        scale = ((a2[:, None] ** 2 * lam + s2[:, None] ** 2) / (a[:, None] ** 2 * lam + s[:, None] ** 2)).sqrt()
        centred = (x.double().reshape(len(x), -1) - a[:, None] * self.means[0]) @ u
        return (a2[:, None] * self.means[0] + (scale * centred) @ u.T).reshape(x.shape)

    def marginal_log_prob(self, process: Process, x: Tensor, t: float | Tensor) -> Tensor:
        """Exact log p_t(x) under ``process`` at time t."""
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(x.shape[0])
        return self.log_prob(x, process.alpha(t), process.sigma(t))

    @staticmethod
    def _per_sample(x: Tensor, v: Tensor | float) -> Tensor:
        return torch.as_tensor(v, dtype=torch.float64, device=x.device).reshape(-1).expand(x.shape[0])
