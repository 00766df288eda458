r"""Frechet distance between Gaussians (Heusel et al. 2017, the "F" in FID):

    d^2 = ||mu_1 - mu_2||^2 + tr(C_1 + C_2 - 2 (C_1 C_2)^{1/2}).

tr((C_1 C_2)^{1/2}) is the sum of square roots of the eigenvalues of C_1 C_2, which are those of the symmetric
PSD matrix C_1^{1/2} C_2 C_1^{1/2}: computed that way it needs no non-symmetric matrix square root.
"""
from __future__ import annotations

import torch
from torch import Tensor


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (unbiased) covariance of features of shape (n, d), in float64."""
    f = features.reshape(features.shape[0], -1).double()
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def _sqrtm_psd(c: Tensor) -> Tensor:
    w, v = torch.linalg.eigh(c)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Squared Frechet distance between N(mu1, cov1) and N(mu2, cov2)."""
    mu1, mu2, cov1, cov2 = (a.double() for a in (mu1, mu2, cov1, cov2))
    s1 = _sqrtm_psd(cov1)
    cross = torch.linalg.eigvalsh(s1 @ cov2 @ s1).clamp_min(0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + cov1.trace() + cov2.trace() - 2 * cross)


def frechet_distance_to(samples: Tensor, mu: Tensor, cov: Tensor) -> float:
    """Frechet distance between the Gaussian fitted to ``samples`` (n, d) and N(mu, cov)."""
    m, c = gaussian_stats(samples)
    return frechet_distance(m, c, mu, cov)
