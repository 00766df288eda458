"""eps / x0 / v / score conversions and the EpsModel wrapper."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusion.parameterization import PREDICTIONS, EpsModel, from_eps, to_eps
from diffusion.preconditioning import EDMPrecond
from diffusion.processes import DDPM, EDM, VESDE, VPSDE, RectifiedFlow, SubVPSDE

PROCESSES = [VPSDE(), SubVPSDE(), VESDE(), DDPM("linear", 1000), EDM(), RectifiedFlow()]
IDS = ["vp", "subvp", "ve", "ddpm", "edm", "rf"]


def times(p):
    return torch.tensor([p.t_eps + 0.01 * (p.t_max - p.t_eps), 0.3 * p.t_max, p.t_max], dtype=torch.float64)


@pytest.mark.parametrize("p", PROCESSES, ids=IDS)
def test_conversions_match_definitions_and_round_trip(p):
    """x_t = alpha x0 + sigma eps: from_eps gives x0, v = alpha eps - sigma x0, score = -eps/sigma and EDM's
    F = (x0 - c_skip x_hat)/c_out exactly (float64, 1e-9 relative), the velocity alpha' x0 + sigma' eps with the
    derivatives by central differences (h = 1e-6 of the range: ~1e-9 relative; asserted 1e-6; DDPM's kinked
    alpha is checked at mid-step times), and to_eps inverts each."""
    h = 1e-6 * (p.t_max - p.t_eps)
    t = times(p).clamp_max(p.t_max - 10 * h)  # rectified flow's coefficients are clamped at t_max
    if isinstance(p, DDPM):
        t = t.floor().clamp_max(p.t_max - 1) + 0.5
    x0, eps = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    alpha, sigma = p.alpha(t)[:, None], p.sigma(t)[:, None]
    x_t = alpha * x0 + sigma * eps
    d_alpha = (p.alpha(t + h) - p.alpha(t - h))[:, None] / (2 * h)
    d_sigma = (p.sigma(t + h) - p.sigma(t - h))[:, None] / (2 * h)
    level, sd = sigma / alpha, 0.5
    c_skip, c_out = sd**2 / (level**2 + sd**2), level * sd / (level**2 + sd**2).sqrt()
    want = {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0, "score": -eps / sigma,
            "velocity": d_alpha * x0 + d_sigma * eps, "edm": (x0 - c_skip * x_t / alpha) / c_out}
    for prediction in PREDICTIONS:
        out = from_eps(prediction, p, x_t, t, eps)
        tol = 1e-6 if prediction == "velocity" else 1e-9
        torch.testing.assert_close(out, want[prediction], rtol=tol, atol=tol)
        torch.testing.assert_close(to_eps(prediction, p, x_t, t, out), eps, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="prediction"):
        from_eps("mu", p, x_t, t, eps)


class Recorder(nn.Module):
    def __init__(self, output=None):
        super().__init__()
        self.output = output

    def forward(self, x_in, label, class_labels=None):
        self.x_in, self.label, self.class_labels = x_in, label, class_labels
        return self.output if self.output is not None else torch.zeros_like(x_in)


@pytest.mark.parametrize("p", PROCESSES, ids=IDS)
def test_eps_model_scales_input_and_passes_noise_label(p):
    t = times(p)
    x = torch.randn(3, 2, 2, dtype=torch.float64)
    net = Recorder()
    EpsModel(net, p)(x, t)
    alpha, sigma = p.alpha(t), p.sigma(t)
    torch.testing.assert_close(net.x_in, x / (alpha**2 + sigma**2).sqrt()[:, None, None])
    torch.testing.assert_close(net.label, p.noise_label(t).float())
    assert net.label.dtype == torch.float32 and net.class_labels is None
    EpsModel(net, p, scale_input=False)(x, t, torch.tensor([1, 2, 3]))
    assert net.x_in is x and net.class_labels.tolist() == [1, 2, 3]


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_eps_model_converts_any_prediction_to_eps(prediction):
    """A network that outputs the true target in its own space yields the true eps."""
    p = VPSDE()
    t = torch.full((4,), 0.4, dtype=torch.float64)
    x0, eps = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    x_t = p.noise(x0, t, eps)
    net = Recorder(from_eps(prediction, p, x_t, t, eps))
    model = EDMPrecond(net, p) if prediction == "edm" else EpsModel(net, p, prediction=prediction)
    torch.testing.assert_close(model(x_t, t), eps, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model.raw(x_t, t), net.output)
    with pytest.raises(ValueError, match="prediction"):
        EpsModel(net, p, prediction="mean")


def test_clip_denoised_clamps_the_implied_x0_and_leaves_the_rest():
    """The wrapped eps implies x0_pred = clamp(x0_pred, -1, 1) exactly: unchanged inside the data range, the
    nearest bound outside (checked to float64 rounding), on a DDPM and a VE process."""
    from diffusion.parameterization import clip_denoised, eps_to_x0
    from diffusion.processes import DDPM, VESDE

    for process, t in ((DDPM(), torch.tensor([10.0, 500.0, 900.0])), (VESDE(), torch.tensor([0.1, 0.5, 0.9]))):
        g = torch.Generator().manual_seed(0)
        x = 3 * torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
        eps = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
        model = lambda x_, t_, **_: eps  # noqa: E731
        x0 = eps_to_x0(process, x, t, eps)
        x0_clipped = eps_to_x0(process, x, t, clip_denoised(model, process)(x, t))
        assert (x0.abs() > 1).any() and (x0.abs() < 1).any()
        torch.testing.assert_close(x0_clipped, x0.clamp(-1, 1), rtol=0, atol=1e-9)


def test_sample_with_clip_denoised_stays_in_range():
    from diffusion import processes, sample

    proc = processes.DDPM(num_steps=100)
    wild = lambda x, t, **_: -3 * x  # noqa: E731  a model whose denoised estimates leave [-1, 1]
    g = torch.Generator().manual_seed(0)
    x = sample(proc, wild, (8, 4), sampler="ddim", steps=10, generator=g, clip_denoised=1.0)
    assert x.abs().max() <= 1 + 1e-6
    g = torch.Generator().manual_seed(0)
    assert sample(proc, wild, (8, 4), sampler="ddim", steps=10, generator=g).abs().max() > 1
