r"""Training losses, one small class each (EDM ``loss.py`` style).

A loss is built with its process and called as ``loss(model, x0, class_labels=None, generator=None)``,
returning the per-sample loss, shape (batch,). ``model`` is a ``parameterization.EpsModel``:
``model.raw(x_t, t, class_labels)`` is the network's own prediction (eps, x0, v or score) and
``model(x_t, t, class_labels)`` its eps prediction. A plain callable ``model(x_t, t) -> eps`` is treated as
an eps-predicting network. Class labels pass through untouched (the trainer drops them for CFG).

All losses draw t, then eps ~ N(0, I), from ``generator`` and noise x_t = alpha_t x0 + sigma_t eps.
"""
from __future__ import annotations


import torch
from torch import Tensor

from diffusion.buildable import buildable
from diffusion.errors import ConfigError
from diffusion.likelihood.bound import ddpm_prior_kl, ddpm_terms
from diffusion.parameterization import from_eps, to_eps
from diffusion.preconditioning import sigma_data
from diffusion.processes.base import MARKOV_CHAIN, Process

WEIGHTINGS = ("sigma2", "likelihood")


def _raw(model, x_t: Tensor, t: Tensor, class_labels: Tensor | None) -> tuple[Tensor, str]:
    """The network's own output and what it predicts."""
    if hasattr(model, "raw"):
        return model.raw(x_t, t, class_labels), model.prediction
    return (model(x_t, t) if class_labels is None else model(x_t, t, class_labels)), "eps"


def _eps(model, x_t: Tensor, t: Tensor, class_labels: Tensor | None) -> Tensor:
    return model(x_t, t) if class_labels is None else model(x_t, t, class_labels)


def _mean_flat(x: Tensor) -> Tensor:
    return x.flatten(1).mean(1)


def _eps_gain(prediction: str, process: Process, t: Tensor) -> Tensor:
    """d eps / d out per sample (float64, shape of t): every conversion to eps is eps = A x_t + B out with
    scalar A, B given t, so B is to_eps of out = 1 at x_t = 0."""
    t = t.double().reshape(-1)
    zeros, ones = torch.zeros(len(t), 1, dtype=torch.float64), torch.ones(len(t), 1, dtype=torch.float64)
    return to_eps(prediction, process, zeros.to(t.device), t, ones.to(t.device)).reshape(-1)


def _weighted_regression(model, process: Process, x0: Tensor, t: Tensor, eps: Tensor, class_labels: Tensor | None,
                         eps_weight: Tensor | None) -> Tensor:
    """mean_dims |out - target|^2 in the network's own space, times ``eps_weight`` gain^2 (gain = d eps/d out):
    the loss eps_weight |eps_pred - eps|^2 whatever the network predicts (all conversions are affine in out).
    ``eps_weight=None``: the plain unweighted MSE in the network's own space."""
    x_t = process.noise(x0, t, eps)
    out, prediction = _raw(model, x_t, t.to(x0.dtype), class_labels)
    target = from_eps(prediction, process, x_t, t, eps)
    loss = _mean_flat((out.to(x0.dtype) - target) ** 2)
    if eps_weight is None:
        return loss
    return (eps_weight * _eps_gain(prediction, process, t) ** 2).to(x0.dtype) * loss


def min_snr_weight(process: Process, t: Tensor, gamma: float) -> Tensor:
    """Min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", eq. 7) as
    a weight on |eps_pred - eps|^2: min(SNR, gamma) / SNR, SNR = alpha^2 / sigma^2, float64."""
    snr = process.log_snr(t.double()).exp()
    return snr.clamp_max(gamma) / snr


@buildable
class EpsMSE:
    r"""DDPM's L_simple (Ho et al. 2020 eq. 14): E_{t, eps} mean_dims |target - net(x_t, t)|^2, t ~ process.sample_t.

    The target is in the network's own prediction space, target = from_eps(prediction, eps): eps itself,
    x0, or v = alpha eps - sigma x0 (Salimans & Ho 2022). Each has the same minimiser, the posterior mean
    E[eps | x_t] mapped into that space (the maps are affine in eps given x_t); they weight t differently.

    ``min_snr_gamma``: Min-SNR-gamma weighting (Hang et al. 2023): the loss becomes min(SNR, gamma) |x0_pred - x0|^2
    = min(SNR, gamma)/SNR |eps_pred - eps|^2, which in the network's own space is their weight min(SNR, gamma)/SNR
    for eps, min(SNR, gamma) for x0 and min(SNR, gamma)/(SNR + 1) for v on a variance-preserving process (the
    paper uses gamma = 5). None (default): no weighting.
    """

    def __init__(self, process: Process, min_snr_gamma: float | None = None):
        if min_snr_gamma is not None and min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma must be > 0 (Hang et al. use 5) or null, got {min_snr_gamma}")
        self.process, self.min_snr_gamma = process, min_snr_gamma

    def __call__(self, model, x0: Tensor, class_labels: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        t = self.process.sample_t(x0.shape[0], generator=generator, device=x0.device).double()  # float64 coefficients
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        weight = None if self.min_snr_gamma is None else min_snr_weight(self.process, t, self.min_snr_gamma)
        return _weighted_regression(model, self.process, x0, t, eps, class_labels, weight)


@buildable
class EDMLoss:
    r"""EDM's loss (Karras et al. 2022, eq. 2 and table 1): with sigma_hat = sigma/alpha (EDM's sigma),

        lambda(sigma_hat) |D(x_hat; sigma_hat) - x0|^2,   lambda = (sigma_hat^2 + sigma_data^2) / (sigma_hat sigma_data)^2,

    D the denoised estimate x0_pred, t ~ process.sample_t (log-normal sigma for ``processes.EDM``; the process's own
    draw elsewhere). lambda = 1 / c_out^2, so with ``prediction: edm`` (``preconditioning.EDMPrecond``) it is the
    unit-weight |F - (x0 - c_skip x_hat)/c_out|^2; any other prediction gets the same loss through its own space.
    sigma_data is the process's (0.5 where it sets none; ``preconditioning.sigma_data``).
    """

    #: what the network predicts when the config says ``prediction: auto``
    prediction = "edm"

    def __init__(self, process: Process):
        self.process = process

    def weight(self, t: Tensor) -> Tensor:
        """lambda(sigma_hat), float64."""
        t = t.double()
        level2 = self.process.sigma2(t) / (2 * self.process.log_alpha(t)).exp()
        sd2 = sigma_data(self.process) ** 2
        return (level2 + sd2) / (level2 * sd2)

    def __call__(self, model, x0: Tensor, class_labels: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        t = self.process.sample_t(x0.shape[0], generator=generator, device=x0.device).double()
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        level2 = self.process.sigma2(t) / (2 * self.process.log_alpha(t)).exp()
        # |x0_pred - x0|^2 = sigma_hat^2 |eps_pred - eps|^2
        return _weighted_regression(model, self.process, x0, t, eps, class_labels, self.weight(t) * level2)


@buildable
class FlowMatching:
    r"""Conditional flow matching (Lipman et al. 2023 eq. 9; Liu et al. 2022): regress the velocity of the path,

        |u_pred(x_t, t) - u|^2,   u = dx_t/dt = alpha' x0 + sigma' eps  (= eps - x0 for rectified flow),

    t ~ process.sample_t (uniform or logit-normal for ``processes.RectifiedFlow``). u = f x_t + g^2/(2 sigma) eps
    is the probability-flow ODE's velocity at the optimum, so the loss is (g^2 / (2 sigma))^2 |eps_pred - eps|^2
    (1/(1 - t)^2 times the eps loss on rectified flow). Exact in the network's own space for ``prediction:
    velocity``; other predictions are converted.
    """

    #: what the network predicts when the config says ``prediction: auto``
    prediction = "velocity"

    def __init__(self, process: Process):
        self.process = process

    def __call__(self, model, x0: Tensor, class_labels: Tensor | None = None,
                 generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
        """``noise``: the x_T paired with each x0 (reflow's couplings, ``distillation.reflow``) in place of
        independent draws; t is drawn all the same."""
        p = self.process
        t = p.sample_t(x0.shape[0], generator=generator, device=x0.device).double()
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype) if noise is None else noise
        weight = (p.g2(t) / (2 * p.sigma2(t).sqrt())) ** 2
        return _weighted_regression(model, p, x0, t, eps, class_labels, weight)


@buildable
class DSM:
    r"""Continuous denoising score matching (Song et al. 2021 eq. 7), mean over dimensions:

        lambda(t) |score_theta(x_t, t) + eps / sigma_t|^2,   t ~ process.sample_t (U[t_eps, t_max] for SDEs),

    weighting ``"sigma2"``: lambda = sigma^2, which makes it |eps_theta - eps|^2, i.e. ``EpsMSE`` for an
    eps network (identical draws from the same generator on an SDE); ``"likelihood"``: lambda = g^2 (Song,
    Durkan, Murray & Ermon 2021), so the loss is g^2/sigma^2 times the sigma2 one and its t-integral is the
    data-dependent part of their likelihood bound (divided by d, reduced to a mean over dimensions).

    ``importance_sampling=True`` draws t with density g^2/sigma^2 / Z on [t_eps, t_max] (uniform in
    lambda = log SNR, Z = lambda(t_eps) - lambda(t_max)) and multiplies by the ratio of densities
    Z sigma^2 / (g^2 (t_max - t_eps)): the same expectation as uniform t. With the likelihood weighting
    this makes the loss Z / (t_max - t_eps) |eps_theta - eps|^2 (mean over dims), whose variance no
    longer blows up near t_eps.
    """

    def __init__(self, process: Process, weighting: str = "sigma2", importance_sampling: bool = False):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
        self.process, self.weighting, self.importance_sampling = process, weighting, importance_sampling

    def sample_t(self, batch: int, generator: torch.Generator | None, device) -> tuple[Tensor, Tensor]:
        """Times (float64) and the importance weight relative to uniform t (ones without importance sampling)."""
        p = self.process
        if not self.importance_sampling:  # the process's training times (uniform for the SDEs), as EpsMSE draws them
            return p.sample_t(batch, generator=generator, device=device).double(), torch.ones(batch, dtype=torch.float64, device=device)
        u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
        lam_lo, lam_hi = p.log_snr(torch.tensor([p.t_max, p.t_eps], dtype=torch.float64, device=device)).tolist()
        t = p.t_from_log_snr(lam_lo + (lam_hi - lam_lo) * u)
        return t, (lam_hi - lam_lo) * p.sigma2(t) / (p.g2(t) * (p.t_max - p.t_eps))

    def __call__(self, model, x0: Tensor, class_labels: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        t, weight = self.sample_t(x0.shape[0], generator, x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.process.noise(x0, t, eps)
        # sigma^2 |score + eps/sigma|^2 = |eps - eps_theta|^2 with score = -eps_theta/sigma
        loss = _mean_flat((_eps(model, x_t, t.to(x0.dtype), class_labels).to(x0.dtype) - eps) ** 2)
        if self.weighting == "likelihood":
            weight = weight * self.process.g2(t) / self.process.sigma2(t)
        return weight.to(x0.dtype) * loss


@buildable
class VLBLoss:
    r"""The DDPM variational bound as a loss (fixed reverse variance), per dimension in nats.

    One term per sample: t ~ U{0, ..., N-1}, N * L_t (L_0 the decoder, L_t the KL of ``likelihood.bound``)
    plus the closed-form prior KL, divided by d: an unbiased one-draw estimate of
    ``variational_bound(process, model, x0) / d``. Gradients reach the model's mean only (the variance is
    fixed), so no stop-gradient is needed as with Nichol & Dhariwal's learned variance.
    """

    def __init__(self, process: Process, variance: str = "beta"):
        if MARKOV_CHAIN not in process.offers:
            raise ValueError("VLBLoss is the discrete DDPM bound; for an SDE use DSM(process, weighting='likelihood')")
        self.process, self.variance = process, variance

    def __call__(self, model, x0: Tensor, class_labels: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        p = self.process
        t = torch.randint(0, p.num_steps, (x0.shape[0],), generator=generator, device=x0.device).double()
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        terms = ddpm_terms(p, model, x0, t, eps, variance=self.variance, class_labels=class_labels)
        return (p.num_steps * terms + ddpm_prior_kl(p, x0)) / x0[0].numel()


@buildable
class HybridLoss:
    r"""Nichol & Dhariwal 2021 eq. 16: L_hybrid = L_simple + vlb_weight * L_vlb, with L_vlb the full bound
    estimate of ``VLBLoss`` (so vlb_weight = 0.001 at N = 1000 weights the sampled term by N/1000 = 1, as in
    their code). The two terms use independent draws of t and eps."""

    def __init__(self, process: Process, vlb_weight: float = 0.001, variance: str = "beta"):
        self.simple, self.vlb, self.vlb_weight = EpsMSE(process), VLBLoss(process, variance), float(vlb_weight)

    def __call__(self, model, x0: Tensor, class_labels: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        return (self.simple(model, x0, class_labels, generator)
                + self.vlb_weight * self.vlb(model, x0, class_labels, generator))


#: configs/loss/<name>.yaml -> the loss class it extends (config.py generates each one's schema from this table)
LOSSES = {"eps_mse": EpsMSE, "dsm": DSM, "hybrid": HybridLoss, "vlb": VLBLoss, "edm": EDMLoss, "flow_matching": FlowMatching}


def auto_loss(process: Process) -> str:
    """The name ``loss=auto`` means for ``process``: its ``default_loss`` (flow matching for rectified flow, EDM's
    loss for EDM, eps-MSE for the others). The one place ``loss=auto`` is resolved."""
    name = type(process).default_loss
    if name not in LOSSES:
        raise ConfigError(f"{type(process).__name__}.default_loss={name!r} is not one of {', '.join(LOSSES)}: "
                          "set loss= explicitly")
    return name


@buildable
def default_loss(process: Process):
    """``loss=auto`` (configs/loss/auto.yaml): the loss ``auto_loss(process)`` names, with that loss's defaults.
    Training writes the concrete loss into the run's config instead (``training.build.resolve_formulation``)."""
    return LOSSES[auto_loss(process)](process)


__all__ = ["EpsMSE", "DSM", "VLBLoss", "HybridLoss", "EDMLoss", "FlowMatching", "default_loss", "auto_loss", "LOSSES",
           "min_snr_weight"]
