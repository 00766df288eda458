"""EDM preconditioning: the wrapper around the exact denoiser returns the exact eps under every process, its
coefficients are EDM's table 1, and it gives unit-variance inputs and targets for data of std sigma_data."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusion.preconditioning import EDMPrecond, edm_coefficients
from diffusion.processes import DDPM, EDM, VESDE, VPSDE, RectifiedFlow
from diffusion.toy import GaussianMixture

PROCESSES = [EDM(), RectifiedFlow(), VPSDE(), VESDE(), DDPM("linear", 1000)]
IDS = ["edm", "rf", "vp", "ve", "ddpm"]


class ExactF(nn.Module):
    """The raw network F that EDM's preconditioning needs to reproduce the mixture's exact denoiser, written from
    table 1 alone: sigma = exp(4 c_noise), x_hat = x_in sqrt(sigma^2 + sd^2), D = E[x0 | x_hat] (the exact eps
    under EDM, where x = x_hat), F = (D - c_skip x_hat) / c_out."""

    def __init__(self, gm: GaussianMixture, sd: float):
        super().__init__()
        self.gm, self.sd, self.edm = gm, sd, EDM(sigma_data=sd)

    def forward(self, x_in, c_noise, class_labels=None):
        sigma = (4 * c_noise.double()).exp()[:, None]
        x_hat = x_in.double() * (sigma**2 + self.sd**2).sqrt()
        eps = self.gm.eps_model(self.edm)(x_hat, sigma.reshape(-1))
        denoised = x_hat - sigma * eps
        c_skip = self.sd**2 / (sigma**2 + self.sd**2)
        c_out = sigma * self.sd / (sigma**2 + self.sd**2).sqrt()
        return (denoised - c_skip * x_hat) / c_out


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_wrapper_around_the_exact_denoiser_returns_the_exact_eps(process):
    """c_noise reaches the network in float32 (EDM's own choice), so sigma carries ~1e-7 relative error: eps
    agrees to 1e-5 (measured < 1e-7)."""
    gm = GaussianMixture.random(d=2, k=3, spread=1.0, scale=(0.1, 0.3), seed=0)
    sd = getattr(process, "sigma_data", 0.5)
    model = EDMPrecond(ExactF(gm, sd), process)
    g = torch.Generator().manual_seed(0)
    lo, hi = (process.t_eps, process.t_max) if not isinstance(process, DDPM) else (1.0, process.t_max - 1)
    for t in torch.linspace(lo, hi, 7, dtype=torch.float64)[1:]:
        a, s = process.alpha(t).item(), process.sigma(t).item()
        x = a * gm.sample(64, g) + s * torch.randn(64, 2, generator=g, dtype=torch.float64)
        tt = t.expand(64)
        want = gm.eps_model(process)(x, tt)
        torch.testing.assert_close(model(x, tt), want, rtol=1e-5, atol=1e-5)
        # denoise is D in x0 units: alpha x0_pred = x - sigma eps
        torch.testing.assert_close(a * model.denoise(x, tt), x - s * want, rtol=1e-5, atol=1e-5)


def test_coefficients_are_edm_table_1():
    p = EDM(sigma_data=0.5)
    sigma = torch.tensor([0.002, 0.5, 80.0], dtype=torch.float64)
    c = edm_coefficients(p, sigma)
    torch.testing.assert_close(c["c_skip"], 0.25 / (sigma**2 + 0.25))
    torch.testing.assert_close(c["c_out"], sigma * 0.5 / (sigma**2 + 0.25).sqrt())
    torch.testing.assert_close(c["c_in"], 1 / (sigma**2 + 0.25).sqrt())
    torch.testing.assert_close(c["c_noise"], sigma.log() / 4)
    torch.testing.assert_close(c["c_noise"], p.noise_label(sigma))


@pytest.mark.parametrize("process", [EDM(), RectifiedFlow(), VPSDE()], ids=["edm", "rf", "vp"])
def test_unit_variance_input_and_target(process):
    """For x0 ~ N(0, sigma_data^2 I) the network's input c_in x / alpha and its target (x0 - c_skip x_hat)/c_out
    have variance 1 at every noise level (EDM appendix B.6): 100k draws, within 2%."""
    sd = getattr(process, "sigma_data", 0.5)
    g = torch.Generator().manual_seed(0)
    n = 100_000
    for t in process.timesteps(6, "uniform").tolist():
        tt = torch.full((n,), t, dtype=torch.float64)
        x0 = sd * torch.randn(n, 1, generator=g, dtype=torch.float64)
        x = process.noise(x0, tt, torch.randn(n, 1, generator=g, dtype=torch.float64))
        c = edm_coefficients(process, tt)
        x_hat = x[:, 0] / c["alpha"]
        assert abs(float((c["c_in"] * x_hat).var()) - 1) < 0.02
        assert abs(float(((x0[:, 0] - c["c_skip"] * x_hat) / c["c_out"]).var()) - 1) < 0.02


def test_eps_model_refuses_edm():
    from diffusion.parameterization import EpsModel

    with pytest.raises(ValueError, match="EDMPrecond"):
        EpsModel(nn.Identity(), EDM(), prediction="edm")
