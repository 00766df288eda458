from __future__ import annotations

import pytest

from diffusion.toy import GaussianMixture


@pytest.fixture(scope="session")
def mixture() -> GaussianMixture:
    """3 components in d = 3, per-axis std 0.05..0.3, centred so that the N(0, s^2 I) priors match the
    noised marginal at t_max closely (VE at sigma_max = 50: |log p_T - log prior| ~ Cov/sigma_max^2 ~ 1e-4/dim)."""
    gm = GaussianMixture.random(d=3, k=3, seed=1)
    return GaussianMixture(gm.weights, gm.means - gm.mean(), gm.covs)


