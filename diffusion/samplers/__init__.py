"""Samplers: each a short function ``sampler(process, model, x_T, steps, generator, progress, **options) -> x_0``
over the eps model, and ``sample``, the one entry point scripts call.

    x0 = sample(proc, model, (64, 1, 28, 28), sampler="dpmpp_2m", steps=20, generator=g)

    sampler          file           processes          NFE                       stochastic
    ddpm             ancestral.py   DDPM               steps                     yes
    ddim             ancestral.py   all                steps                     eta > 0
    euler_maruyama   sde.py         all                steps                     noise_scale > 0
    pc               sde.py         all                steps (1 + corrector)     yes
    ode              ode.py         all                adaptive (+1)             no
    dpmpp_2m         dpm_solver.py  all                steps                     no
    heun             heun.py        all                2 steps - 1               S_churn > 0

    dpmpp_3m         dpmpp_3m.py    all                steps                     no
    unipc            unipc.py       all                steps                     no
    ipndm            ipndm.py       all                steps                     no
    dpmpp_2m_sde     dpmpp_sde.py   all                steps                     yes
    consistency      consistency.py all                steps                     steps > 1

Every sampler walks ``process.timesteps(steps, spacing)`` from t_max to t_min and ends with one step to the
clean data (x0_pred at t_min), so a one-evaluation-per-step sampler costs exactly ``steps`` model calls. The
exception is the multistep solvers (``dpmpp_2m``, ``dpmpp_3m``, ``unipc``, ``ipndm``, ``dpmpp_2m_sde``, registered
with ``layout=SOLVER``): each spends its ``steps`` calls on the first ``steps`` of ``steps + 1`` grid times and
returns x at t_min (the DPM-Solver authors' layout). A sampler's options are its keyword-only parameters
(``sampler_options``; their defaults live there and nowhere else). Every sampler takes ``timesteps=``: explicit
times in place of ``steps`` and ``spacing`` (``grids.py``); ``ipndm`` also takes ``coefficients=``, its multistep
weights. Grids and weights fitted to a model, and schedule files, are the business of ``diffusion.fitting``, one
layer up: ``resolve_sampler`` turns a configured ``timesteps=fitted`` or ``timesteps=<file>`` into the times the
sampler takes. Randomness comes only from the ``generator``, in a fixed order of draws.

Adding a sampler: decorate the function with ``@register_sampler()`` (``needs={MARKOV_CHAIN}`` if it walks DDPM's
discrete chain, ``layout=SOLVER`` if it is a multistep solver that stops at the last of steps + 1 times; see
``registry.py``), import its module here, and add ``configs/sampler/<name>.yaml``. ``diffusion.fitting`` then fits
grids for it by its layout.
"""
from __future__ import annotations

import importlib

from diffusion.samplers.registry import (DENOISE, MARKOV_CHAIN, SAMPLERS, SOLVER, check_sampler, layout, lookup,
                                         register_sampler, runs_on, sampler_options, samplers_for)
from diffusion.samplers.sampling import CountingModel, guided, sample
from diffusion.samplers.spec import SamplerSpec, sampler_from_config

# importing a sampler's module registers it; this order is the order of SAMPLERS (tables, sweeps)
from diffusion.samplers.ancestral import ddim, ddim_step, ddpm, ddpm_step  # isort: skip
from diffusion.samplers.sde import euler_maruyama, pc  # isort: skip
from diffusion.samplers.ode import decode, encode, ode, probability_flow_drift  # isort: skip
from diffusion.samplers.dpm_solver import dpmpp_2m  # isort: skip
from diffusion.samplers.heun import heun  # isort: skip
from diffusion.samplers.dpmpp_3m import dpmpp_3m  # isort: skip
from diffusion.samplers.unipc import unipc  # isort: skip
from diffusion.samplers.ipndm import ipndm  # isort: skip
from diffusion.samplers.dpmpp_sde import dpmpp_2m_sde  # isort: skip
from diffusion.samplers.consistency import consistency  # isort: skip

#: compatibility aliases: the fits moved one layer up, to ``diffusion.fitting``; ``diffusion.samplers.<name>``
#: still finds them, loaded on first use so that importing the samplers never imports the layer above them
_MOVED_UP = {"optimize_timesteps": "diffusion.fitting", "fit_coefficients": "diffusion.fitting"}


def __getattr__(name: str):
    if name in _MOVED_UP:  # compatibility alias (see _MOVED_UP)
        return getattr(importlib.import_module(_MOVED_UP[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["sample", "SAMPLERS", "SamplerSpec", "sampler_from_config", "register_sampler", "check_sampler", "runs_on",
           "samplers_for", "MARKOV_CHAIN", "DENOISE", "SOLVER", "layout", "CountingModel", "guided", "sampler_options",
           "ddpm", "ddim", "ddpm_step", "ddim_step", "euler_maruyama", "pc", "ode", "encode", "decode",
           "probability_flow_drift", "dpmpp_2m", "heun", "dpmpp_3m", "unipc", "ipndm", "dpmpp_2m_sde", "consistency",
           "optimize_timesteps", "fit_coefficients"]
