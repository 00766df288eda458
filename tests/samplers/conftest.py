"""Fixtures for the sampler tests: the exact mixture target (see ``helpers.py`` for the checks)."""
from __future__ import annotations

import pytest
import torch

from diffusion.toy import GaussianMixture

from .helpers import Target


@pytest.fixture(scope="session")
def gm() -> GaussianMixture:
    """Three narrow (std 0.1-0.3) rotated Gaussians in 2-D with weights 0.25/0.37/0.38."""
    return GaussianMixture.random(d=2, k=3, spread=1.0, scale=(0.1, 0.3), seed=0)


@pytest.fixture(scope="session")
def target(gm) -> Target:
    ref = gm.sample(100_000, torch.Generator().manual_seed(123))
    return Target(gm, float(gm.log_prob(ref).mean()))
