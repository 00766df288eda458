"""The exact inpainting target shared by the tests and ``benchmarks/inpainting.py``, and how samples are scored.

A 4-D Gaussian mixture whose three components nearly coincide in the two known coordinates and lie far apart
in the two missing ones, with random rotations coupling the two: given an observation in the overlap, the exact
conditional p(x_missing | x_known) is a genuinely three-modal mixture with non-trivial weights, which is what
separates a sampler that gets the conditional right from one that only lands on some mode.
"""
from __future__ import annotations

import math

import torch

from diffusion.evaluation.frechet import frechet_distance_to
from diffusion.toy import GaussianMixture

#: 1 where known: the first two of the four coordinates
KNOWN = torch.tensor([True, True, False, False])


def target() -> GaussianMixture:
    g = torch.Generator().manual_seed(3)
    means = torch.cat([0.3 * torch.randn(3, 2, generator=g, dtype=torch.float64),
                       1.5 * torch.randn(3, 2, generator=g, dtype=torch.float64)], 1)
    q, _ = torch.linalg.qr(torch.randn(3, 4, 4, generator=g, dtype=torch.float64))
    std = torch.exp(math.log(0.15) + (math.log(0.4) - math.log(0.15)) * torch.rand(3, 4, generator=g, dtype=torch.float64))
    covs = q @ torch.diag_embed(std**2) @ q.transpose(1, 2)
    return GaussianMixture(torch.tensor([1.0, 1.0, 1.0]), means, covs)


def observation(gm: GaussianMixture, towards: int = 0) -> torch.Tensor:
    """x (4,) whose known part sits in the overlap, halfway from the weight-averaged known mean to component
    ``towards``'s: exact conditional weights (0.566, 0.314, 0.120) for 0 and (0.059, 0.370, 0.571) for 2, both far
    from the prior's (1/3, 1/3, 1/3)."""
    x = torch.zeros(4, dtype=torch.float64)
    centre = gm.weights @ gm.means[:, KNOWN]
    x[KNOWN] = centre + 0.5 * (gm.means[towards, KNOWN] - centre)
    return x


def scores(samples_missing: torch.Tensor, cond: GaussianMixture) -> tuple[float, float]:
    """(Frechet distance to the exact conditional's moments, total-variation error of the mixture weights, with the
    weights of a sample set estimated as its mean responsibilities under the exact conditional)."""
    s = samples_missing.reshape(len(samples_missing), -1).double()
    fd = frechet_distance_to(s, cond.mean(), cond.cov())
    w = cond.responsibilities(s).mean(0)
    return fd, 0.5 * float((w - cond.weights).abs().sum())


def floor(cond: GaussianMixture, n: int, draws: int = 10) -> tuple[float, float]:
    """Mean scores of ``draws`` sets of n exact conditional samples: what n samples can show at best."""
    g = torch.Generator().manual_seed(123)
    results = [scores(cond.sample(n, g), cond) for _ in range(draws)]
    return tuple(sum(r[i] for r in results) / draws for i in range(2))
