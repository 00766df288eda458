"""Fixtures for the fitting tests: the sampler tests' exact mixture target."""
from __future__ import annotations

import pytest

from diffusion.toy import GaussianMixture


@pytest.fixture(scope="session")
def gm() -> GaussianMixture:
    """Three narrow (std 0.1-0.3) rotated Gaussians in 2-D with weights 0.25/0.37/0.38."""
    return GaussianMixture.random(d=2, k=3, spread=1.0, scale=(0.1, 0.3), seed=0)
