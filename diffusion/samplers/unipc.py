r"""UniPC (Zhao, Bai, Rao, Zhou & Lu 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models"), in the data-prediction form with the B(h) coefficients (their eq. 8 and algorithms 2-3).

With lambda = log(alpha / sigma), h = lambda_s - lambda_t > 0 and m0 = x0_pred at t, both steps are corrections of
the first-order exponential-integrator step (= DDIM)

    x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) m0 - alpha_s B(h) sum_k rho_k D_k,

where D_k = (m_k - m0) / r_k are divided differences of data predictions m_k at lambda_k, r_k = (lambda_k -
lambda_t) / h, and the rho solve R rho = b with R_{ik} = r_k^{i-1} and b_i = i! h phi_{i+1}(-h) / B(h)
(phi_{k+1}(z) = (phi_k(z) - 1/k!) / z, h phi_1 = e^{-h} - 1): the order conditions of the Taylor expansion of
x0_pred in lambda. B(h) is free up to O(h): ``bh1`` B = -h, ``bh2`` B = e^{-h} - 1.

* **UniP-p** (predictor, order p): the p - 1 previous predictions (r_k < 0); p = 2 uses rho = 1/2.
* **UniC-p** (corrector, order p + 1): after the model is called at the predicted x_s (a call the next step needs
  anyway), the same formula with the new point m_s added (r = 1) re-does the step from x_t. The next predictor
  starts from the corrected x_s but keeps m_s evaluated at the predicted one, so the corrector costs no model
  call (the paper's key trick; their sec. 3.2). The last step has no corrector (no call there).

Layout as dpmpp_2m (``dpm_solver.py``): ``steps + 1`` times, the model called at all but the last, x returned at
t_min; NFE == steps. Warm-up at orders 1, 2, ... and, below 15 steps (``common.HIGH_ORDER_FINAL_BELOW``), lower-order final steps (order <= steps - i),
as the authors' code and diffusers' ``UniPCMultistepScheduler`` do, and second order after a 3x jump in step size
(``common.multistep_order``: GITS grids have such jumps).

Defaults: order 2, bh2, logsnr, chosen on the few-step head to head of ``benchmarks/samplers.md`` (4 mixtures of
different dimension, widths and weights x DDPM, VP, sub-VP, VE, at 5, 6, 10 NFE; the numbers are there). On the
fixed grids order 2 beats order 3 at 5-6 NFE and bh1 is unstable on logsnr; on a fitted grid
(``optimize_timesteps(sampler="unipc", refine=4)``) order 3 is best on DDPM and VP, so the ``fewstep`` preset
(configs/sampler/fewstep.yaml) is order 3 for use with a fitted grid. logsnr is poor on sub-VP at 5-6 NFE, where
its lambda range is twice VP's: use uniform there.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import trange

from diffusion.errors import ConfigError
from diffusion.processes.base import Process
from diffusion.samplers.common import EpsFn, alpha_sigma, check_choice, eps_and_x0, half_log_snr, multistep_order
from diffusion.samplers.grids import Timesteps, solver_grid
from diffusion.samplers.registry import SOLVER, register_sampler

VARIANTS = ("bh1", "bh2")


def unipc_rho(r: list[float], h: float, variant: str) -> tuple[float, list[float]]:
    """B(h) and the rho that meet the first len(r) order conditions R rho = b on the points r (the corrector's
    last point is r = 1); float64. One point gets rho = 1/2, the paper's choice for UniP-2 and UniC-1."""
    hh = -h  # data prediction: the exponential integrator runs in -lambda
    b_h = hh if variant == "bh1" else math.expm1(hh)
    if len(r) == 1:
        return b_h, [0.5]
    h_phi_k, factorial, b = math.expm1(hh) / hh - 1, 1, []
    for i in range(1, len(r) + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R = torch.tensor([[rk ** i for rk in r] for i in range(len(r))], dtype=torch.float64)
    return b_h, torch.linalg.solve(R, torch.tensor(b, dtype=torch.float64)).tolist()


def uni_step(x: Tensor, m: list[Tensor], lam: list[float], lam_s: float, sigma_ratio: float, alpha_s: float,
             variant: str, m_s: Tensor | None = None) -> Tensor:
    """UniP (``m_s`` None) or UniC (``m_s``: the data prediction at the target) from x at lam[0] to lam_s, with the
    data predictions m (newest first) at the log-SNRs lam; sigma_ratio = sigma_s / sigma_t."""
    h = lam_s - lam[0]
    r = [(lam_k - lam[0]) / h for lam_k in lam[1:]]
    diffs = [(m_k - m[0]) / r_k for m_k, r_k in zip(m[1:], r)]
    if m_s is not None:
        r, diffs = r + [1.0], diffs + [m_s - m[0]]
    x = sigma_ratio * x - alpha_s * math.expm1(-h) * m[0]
    if not diffs:
        return x
    b_h, rho = unipc_rho(r, h, variant)
    return x - alpha_s * b_h * sum(c * d for c, d in zip(rho, diffs))


@register_sampler(layout=SOLVER)
def unipc(process: Process, model: EpsFn, x: Tensor, steps: int, generator: torch.Generator | None = None,
          progress: bool = False, *, order: int = 2, variant: str = "bh2", corrector: bool = True,
          spacing: str = "logsnr", timesteps: Timesteps = None) -> Tensor:
    """UniPC-``order`` (UniP predictor, then UniC unless ``corrector=False``) with B(h) ``variant`` (bh1 | bh2)
    from t_max to x at t_min over ``steps + 1`` times (``timesteps`` replaces steps and spacing); NFE == steps."""
    check_choice("variant", variant, VARIANTS)
    if order not in (1, 2, 3):
        raise ConfigError(f"order must be 1, 2 or 3, got {order!r}")
    ts = solver_grid(process, steps, spacing, timesteps, "unipc")
    steps = len(ts) - 1
    lam = [half_log_snr(process, t) for t in ts]
    ratio = [(alpha_sigma(process, s)[0], alpha_sigma(process, s)[1] / alpha_sigma(process, t)[1])
             for t, s in zip(ts, ts[1:])]  # (alpha_s, sigma_s / sigma_t) per step
    m: list[Tensor] = []  # data predictions at lam[i], lam[i - 1], ...
    base, p = x, 0  # base: the (corrected) x at ts[i]; p: the previous step's order
    for i in trange(steps, disable=not progress, desc="unipc"):
        m_i = eps_and_x0(process, model, x, ts[i])[1]  # at the predicted x: the call the next step needs
        if corrector and i > 0:
            alpha_s, sigma_ratio = ratio[i - 1]
            base = uni_step(base, m[:p], lam[i - 1::-1][:p], lam[i], sigma_ratio, alpha_s, variant, m_i)
        else:
            base = x
        m = [m_i] + m[:2]
        p = multistep_order(order, i, steps, lam)
        alpha_s, sigma_ratio = ratio[i]
        x = uni_step(base, m[:p], lam[i::-1][:p], lam[i + 1], sigma_ratio, alpha_s, variant)
    return x


__all__ = ["unipc", "unipc_rho", "uni_step", "VARIANTS"]
