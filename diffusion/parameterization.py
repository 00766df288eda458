r"""What a network predicts, and the wrapper that turns any of it into the eps prediction.

With x_t = alpha x_0 + sigma eps (Kingma et al. 2021; Salimans & Ho 2022 for v):

    x0    = (x_t - sigma eps) / alpha
    score = grad log p_t(x_t) = -eps / sigma
    v     = alpha eps - sigma x0           =>  eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2)
    velocity u = dx_t/dt = alpha' x0 + sigma' eps = f x_t + g^2/(2 sigma) eps   =>  eps = 2 sigma (u - f x_t) / g^2
                                           (the flow-matching target; eps - x0 for rectified flow, Lipman et al. 2023)
    edm   = the raw network F of EDM's preconditioning (``preconditioning.py``; wrap with ``EDMPrecond``)

Every sampler and likelihood calls ``model(x, t) -> eps``; ``EpsModel`` wraps a network that predicts
any of eps / x0 / v / score. As in EDM (Karras et al. 2022, table 1) the wrapper also scales the input to
unit variance, c_in = 1/sqrt(alpha^2 + sigma^2) (a no-op for VP, essential for VE where sigma reaches 50),
and gives the network the process's noise label rather than raw t.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from diffusion.errors import ConfigError
from diffusion.preconditioning import edm_to_eps, eps_to_edm
from diffusion.processes.base import Process
from diffusion.utils import append_dims

PREDICTIONS = ("eps", "x0", "v", "score", "velocity", "edm")


def _coefs(process: Process, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    t = t.reshape(-1).expand(x.shape[0])
    return append_dims(process.alpha(t.double()).to(x.dtype), x.ndim), append_dims(process.sigma(t.double()).to(x.dtype), x.ndim)


def eps_to_x0(process: Process, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    alpha, sigma = _coefs(process, t, x)
    return (x - sigma * eps) / alpha


def x0_to_eps(process: Process, x: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    alpha, sigma = _coefs(process, t, x)
    return (x - alpha * x0) / sigma


def eps_to_score(process: Process, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    _, sigma = _coefs(process, t, x)
    return -eps / sigma


def score_to_eps(process: Process, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
    _, sigma = _coefs(process, t, x)
    return -sigma * score


def eps_to_v(process: Process, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    alpha, sigma = _coefs(process, t, x)
    x0 = (x - sigma * eps) / alpha
    return alpha * eps - sigma * x0


def v_to_eps(process: Process, x: Tensor, t: Tensor, v: Tensor) -> Tensor:
    alpha, sigma = _coefs(process, t, x)
    return (sigma * x + alpha * v) / (alpha**2 + sigma**2)


def _f_g2(process: Process, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    t = t.reshape(-1).expand(x.shape[0]).double()
    f, g2, sigma = process.f_coef(t), process.g2(t), process.sigma2(t).clamp_min(0).sqrt()
    return tuple(append_dims(c.to(x.dtype), x.ndim) for c in (f, g2, sigma))


def eps_to_velocity(process: Process, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """u = alpha' x0 + sigma' eps = f x + g^2 / (2 sigma) eps, the probability-flow ODE's dx/dt."""
    f, g2, sigma = _f_g2(process, t, x)
    return f * x + g2 / (2 * sigma) * eps


def velocity_to_eps(process: Process, x: Tensor, t: Tensor, u: Tensor) -> Tensor:
    f, g2, sigma = _f_g2(process, t, x)
    return 2 * sigma * (u - f * x) / g2


_TO_EPS = {"eps": lambda p, x, t, out: out, "x0": x0_to_eps, "v": v_to_eps, "score": score_to_eps,
           "velocity": velocity_to_eps, "edm": edm_to_eps}
_FROM_EPS = {"eps": lambda p, x, t, eps: eps, "x0": eps_to_x0, "v": eps_to_v, "score": eps_to_score,
             "velocity": eps_to_velocity, "edm": eps_to_edm}


def to_eps(prediction: str, process: Process, x: Tensor, t: Tensor, out: Tensor) -> Tensor:
    """Convert a network output of kind ``prediction`` into eps."""
    return _TO_EPS[_check(prediction)](process, x, t, out)


def from_eps(prediction: str, process: Process, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """Convert eps into the target of kind ``prediction`` (the regression target when training)."""
    return _FROM_EPS[_check(prediction)](process, x, t, eps)


def _check(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ConfigError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
    return prediction


class EpsModel(nn.Module):
    """``model(x, t) -> eps`` around a network ``net(x_in, noise_label, class_labels=None)``.

    t is in the process's own time; the network sees ``process.noise_label(t)`` and the input scaled by
    c_in = 1/sqrt(alpha^2 + sigma^2). ``raw(x, t)`` returns the network's own prediction (the training target space).
    """

    def __init__(self, net: nn.Module, process: Process, prediction: str = "eps", scale_input: bool = True):
        super().__init__()
        if prediction == "edm":
            raise ValueError("prediction 'edm' has its own input scaling and noise label: "
                             "use diffusion.preconditioning.EDMPrecond(net, process)")
        self.net, self.process, self.prediction = net, process, _check(prediction)
        self.scale_input = scale_input

    def raw(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        t = t.reshape(-1).expand(x.shape[0])
        x_in = x
        if self.scale_input:
            alpha, sigma = _coefs(self.process, t, x)
            x_in = x * torch.rsqrt(alpha**2 + sigma**2)
        label = self.process.noise_label(t.double()).to(torch.float32)
        if class_labels is None:
            return self.net(x_in, label)
        return self.net(x_in, label, class_labels=class_labels)

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        out = self.raw(x, t, class_labels)
        return to_eps(self.prediction, self.process, x, t, out.to(x.dtype))


def clip_denoised(model, process: Process, limit: float = 1.0):
    """``model(x, t) -> eps`` whose implied x0_pred is clipped to [-limit, limit], the data range of images.

    eps' = (x - alpha clip(x0_pred)) / sigma. Every sampler then sees a denoised estimate inside the data range:
    the "clip_denoised" of Ho et al.'s sampler (diffusers' ``clip_sample``), here for all samplers at once.
    It changes the model, so likelihoods are computed without it.
    """

    def clipped(x: Tensor, t: Tensor, **kwargs) -> Tensor:
        eps = model(x, t, **kwargs)
        alpha, sigma = _coefs(process, t, x)
        x0_pred = ((x - sigma * eps) / alpha).clamp(-limit, limit)
        return (x - alpha * x0_pred) / sigma

    for attr in ("null_class", "num_classes", "net"):  # keep what samplers look up for guidance
        if hasattr(model, attr):
            setattr(clipped, attr, getattr(model, attr))
    return clipped
