r"""The probability-flow ODE's coefficients, on the clock a solver integrates over (Song et al. 2021, eq. 13).

Every process here has the probability-flow ODE

    dx/dt = f(t) x - 1/2 g(t)^2 score(x, t) = f(t) x + g(t)^2 / (2 sigma(t)) eps(x, t),   score = -eps / sigma,

linear in x and in the model's eps. A solver may integrate it over t or over lambda = log SNR = log(alpha^2 /
sigma^2): dx/dlambda = (dx/dt) (dt/dlambda) with dt/dlambda = -sigma^2 / g^2. Over lambda the jumps of a
piecewise-constant beta(t) (DDPM's continuous view) cancel, dx/dlambda = (sigma^2 x - sigma eps) / 2 for every
VP-type process, so adaptive solvers keep their accuracy; ``Process.ode_clock`` says which clock suits a process.

The sampler (``samplers/ode.py``) and the likelihood (``likelihood/ode.py``) both take their coefficients here.
"""
from __future__ import annotations

from torch import Tensor

CLOCKS = ("t", "log_snr")


def flow_coefficients(process, t: Tensor, clock: str = "t") -> tuple[Tensor, Tensor]:
    """(a, b) in float64 with d x / d clock = a x + b eps at times ``t`` (any shape)."""
    t = t.double()
    sigma2, g2 = process.sigma2(t), process.g2(t)
    a, b = process.f_coef(t), g2 / (2 * sigma2.sqrt())
    if clock == "log_snr":
        dt_dlam = -sigma2 / g2
        a, b = a * dt_dlam, b * dt_dlam
    elif clock != "t":
        raise ValueError(f"unknown clock {clock!r}; choose one of {', '.join(CLOCKS)}")
    return a, b


def to_clock(process, t: Tensor, clock: str) -> Tensor:
    """The clock's value at times t (float64)."""
    return process.log_snr(t.double()) if clock == "log_snr" else t.double()


def from_clock(process, value: Tensor, clock: str) -> Tensor:
    """The time t at which the clock reads ``value`` (float64)."""
    return process.t_from_log_snr(value.double()) if clock == "log_snr" else value.double()


__all__ = ["CLOCKS", "flow_coefficients", "to_clock", "from_clock"]
