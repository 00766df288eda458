"""EDM's loss, flow matching and Min-SNR-gamma: each equals its defining formula on replicated draws, whatever the
network predicts, and EDM's loss at the optimum for data of std sigma_data is exactly 1 (its design)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusion.losses import EDMLoss, EpsMSE, FlowMatching, min_snr_weight
from diffusion.parameterization import EpsModel, eps_to_x0, from_eps
from diffusion.preconditioning import EDMPrecond
from diffusion.processes import EDM, VPSDE, RectifiedFlow

S = 0.5  # data std (= EDM's sigma_data)
D, N = 4, 4096


def label_to_t(process, label):
    if isinstance(process, EDM):  # c_noise = ln(sigma) / 4
        return (4 * label.double()).exp()
    return label.double() / 999


class Scaled(nn.Module):
    """k times the Bayes-optimal eps for N(0, S^2 I) data (k = 1 optimal), returned in ``prediction``'s space."""

    def __init__(self, process, prediction, k=1.0):
        super().__init__()
        self.process, self.prediction, self.k = process, prediction, k

    def forward(self, x_in, label, class_labels=None):
        t = label_to_t(self.process, label)
        alpha, sigma = self.process.alpha(t)[:, None], self.process.sigma(t)[:, None]
        if self.prediction == "edm":  # x_in = c_in x / alpha
            x_t = x_in * alpha * (sigma**2 / alpha**2 + S**2).sqrt()
        else:  # EpsModel's c_in = 1 / sqrt(alpha^2 + sigma^2)
            x_t = x_in * (alpha**2 + sigma**2).sqrt()
        eps = self.k * sigma / (alpha**2 * S**2 + sigma**2) * x_t
        return from_eps(self.prediction, self.process, x_t, t, eps)


def wrap(process, prediction, k=1.0):
    net = Scaled(process, prediction, k)
    return (EDMPrecond(net, process) if prediction == "edm" else EpsModel(net, process, prediction)).double()


def draws(process, seed=1):
    """What every loss draws from its generator, in order: t, then eps."""
    g = torch.Generator().manual_seed(seed)
    x0 = S * torch.randn(N, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = process.sample_t(N, generator=g).double()
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    return x0, t, eps, process.noise(x0, t, eps)


@pytest.mark.parametrize("prediction", ["edm", "eps", "x0", "velocity"])
def test_edm_loss_is_lambda_times_denoiser_error(prediction):
    """lambda(sigma) |D - x0|^2 by hand (1e-8 relative); at the optimum for data of std sigma_data the EDM loss is
    lambda sigma^2 S^2/(S^2 + sigma^2) = 1 at every sigma: the batch mean is 1 within 4 standard errors."""
    process = EDM()
    x0, t, eps, x_t = draws(process)
    for k in (1.0, 0.8):
        model = wrap(process, prediction, k)
        loss = EDMLoss(process)(model, x0, generator=torch.Generator().manual_seed(1))
        lam = (t**2 + S**2) / (t * S) ** 2
        want = lam * ((eps_to_x0(process, x_t, t, model(x_t, t)) - x0) ** 2).mean(1)
        torch.testing.assert_close(loss, want, rtol=1e-8, atol=1e-10)
        if k == 1.0:
            assert abs(loss.mean() - 1) < 4 * loss.std() / N**0.5, loss.mean()
    if prediction == "edm":  # unit weight: EpsMSE on the raw F is the same loss
        model = wrap(process, "edm", 0.8)
        plain = EpsMSE(process)(model, x0, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(plain, EDMLoss(process)(model, x0, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("prediction", ["velocity", "eps", "v"])
def test_flow_matching_regresses_eps_minus_x0_on_rectified_flow(prediction):
    for process in (RectifiedFlow(), RectifiedFlow(t_sampling="logit_normal")):
        x0, t, eps, x_t = draws(process)
        model = wrap(process, prediction, 0.8)
        loss = FlowMatching(process)(model, x0, generator=torch.Generator().manual_seed(1))
        eps_pred = model(x_t, t)
        x0_pred = (x_t - t[:, None] * eps_pred) / (1 - t[:, None])
        want = (((eps_pred - x0_pred) - (eps - x0)) ** 2).mean(1)
        torch.testing.assert_close(loss, want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_min_snr_gamma_is_hang_et_al_weighting(prediction):
    """Hang et al. 2023 in each prediction's own space on VP: eps min(SNR, g)/SNR, x0 min(SNR, g), v
    min(SNR, g)/(SNR + 1); times |out - target|^2 (1e-8 relative). gamma = inf is |eps_pred - eps|^2 in every space."""
    process, gamma = VPSDE(), 5.0
    x0, t, eps, x_t = draws(process)
    model = wrap(process, prediction, 0.8)
    loss = EpsMSE(process, min_snr_gamma=gamma)(model, x0, generator=torch.Generator().manual_seed(1))
    snr = process.log_snr(t).exp()
    weight = {"eps": snr.clamp_max(gamma) / snr, "x0": snr.clamp_max(gamma), "v": snr.clamp_max(gamma) / (snr + 1)}[prediction]
    target = from_eps(prediction, process, x_t, t, eps)
    want = weight * ((model.raw(x_t, t) - target) ** 2).mean(1)
    torch.testing.assert_close(loss, want, rtol=1e-8, atol=1e-10)
    eps_loss = ((model(x_t, t) - eps) ** 2).mean(1)
    torch.testing.assert_close(EpsMSE(process, min_snr_gamma=float("inf"))(model, x0, generator=torch.Generator().manual_seed(1)),
                               eps_loss, rtol=1e-8, atol=1e-10)
    assert torch.all(min_snr_weight(process, t, gamma) <= 1)
    with pytest.raises(ValueError, match="min_snr_gamma"):
        EpsMSE(process, min_snr_gamma=0.0)


def test_the_optimum_is_the_minimum():
    """Each new loss is lower at the Bayes-optimal model than at 0.9x or 1.1x of it (same draws)."""
    for process, make, prediction in ((EDM(), EDMLoss, "edm"), (RectifiedFlow(), FlowMatching, "velocity"),
                                      (VPSDE(), lambda p: EpsMSE(p, min_snr_gamma=5.0), "v")):
        x0 = S * torch.randn(N, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        losses = {k: float(make(process)(wrap(process, prediction, k), x0, generator=torch.Generator().manual_seed(1)).mean())
                  for k in (0.9, 1.0, 1.1)}
        assert losses[1.0] < min(losses[0.9], losses[1.1]), (process, losses)
