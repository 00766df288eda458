"""Interpolation through the probability-flow ODE on an exact mixture: decode(encode(x)) = x, and the decoded slerp
path stays where the density is high, while the straight line between the same endpoints does not."""
from __future__ import annotations

import pytest
import torch

from diffusion import processes
from diffusion.conditioning import interpolate, slerp
from diffusion.samplers import decode, encode
from diffusion.toy import GaussianMixture


@pytest.fixture(scope="module")
def mixture():
    """Three narrow, well separated components in 2-D (std 0.1-0.3, means spread 2)."""
    return GaussianMixture.random(2, k=3, spread=2.0, scale=(0.1, 0.3), seed=0)


def _endpoints(gm):
    """One exact draw from each of components 0 and 1 (their means are 2.2 apart)."""
    g = torch.Generator().manual_seed(0)
    x = gm.sample(400, g)
    k = gm.responsibilities(x).argmax(1)
    return x[k == 0][0], x[k == 1][0]


@pytest.mark.parametrize("process", [processes.VPSDE(), processes.DDPM("linear", 1000), processes.VESDE()],
                         ids=["vpsde", "ddpm", "vesde"])
def test_decode_encode_is_identity(mixture, process):
    """dopri5 at rtol = atol = 1e-7 both ways: the round trip of 64 exact samples (float64) is within 1e-5
    (measured 0.9e-6, 0.8e-6, 1.7e-6; at 1e-5 the worst sample is off by 0.03 on VP, 1e-3 on DDPM)."""
    x = mixture.sample(64, torch.Generator().manual_seed(1))
    model = mixture.eps_model(process)
    z = encode(process, model, x, rtol=1e-7, atol=1e-7)
    back = decode(process, model, z, rtol=1e-7, atol=1e-7)
    assert (back - x).abs().max() < 1e-5
    assert (z - x).abs().max() > 0.5  # the latent is not the data


def test_slerp_keeps_the_norm_and_ends():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(2, 1, 28, 28, generator=g, dtype=torch.float64)
    path = slerp(z0, z1, torch.linspace(0, 1, 9))
    assert path.shape == (9, 1, 28, 28)
    torch.testing.assert_close(path[0], z0)
    torch.testing.assert_close(path[-1], z1)
    norms = path.flatten(1).norm(dim=1)
    assert (norms - 28).abs().max() < 2.0  # on the typical shell, sqrt(784) = 28 (a straight line dips to ~20)
    line = 0.5 * (z0 + z1)
    assert line.norm() < 21


def test_path_stays_in_high_density(mixture):
    """Stated level: the 1st percentile of log p_{t_min} over exact samples of p_{t_min} (20k draws). Every one of
    16 decoded frames between draws of two different components lies above it; the straight line between the same
    endpoints falls below it (it crosses the empty region between the components)."""
    vp = processes.VPSDE()
    alpha, sigma = float(vp.alpha(torch.tensor(vp.t_min))), float(vp.sigma(torch.tensor(vp.t_min)))
    g = torch.Generator().manual_seed(2)
    xs = alpha * mixture.sample(20_000, g) + sigma * torch.randn(20_000, 2, generator=g, dtype=torch.float64)
    level = float(torch.quantile(mixture.log_prob(xs, alpha, sigma), 0.01))
    a, b = _endpoints(mixture)
    path = interpolate(vp, mixture.eps_model(vp), a, b, frames=16, rtol=1e-7, atol=1e-7)
    log_p = mixture.log_prob(path, alpha, sigma)
    assert path.shape == (16, 2)
    assert (path[0] - a).abs().max() < 1e-5 and (path[-1] - b).abs().max() < 1e-5
    assert log_p.min() > level, (log_p.min(), level)
    u = torch.linspace(0, 1, 16, dtype=torch.float64)[:, None]
    line = mixture.log_prob((1 - u) * a + u * b, alpha, sigma)
    assert line.min() < level


def test_bad_interpolation_input(mixture):
    vp = processes.VPSDE()
    with pytest.raises(ValueError, match="differ in shape"):
        interpolate(vp, mixture.eps_model(vp), torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="frames must be an integer >= 2"):
        interpolate(vp, mixture.eps_model(vp), torch.zeros(2), torch.zeros(2), frames=1)
