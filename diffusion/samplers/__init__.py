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
    dpmpp_3m         dpmpp_3m.py    all                steps                     no
    unipc            unipc.py       all                steps                     no
    ipndm            ipndm.py       all                steps                     no
    dpmpp_2m_sde     dpmpp_sde.py   all                steps                     yes

Every sampler walks ``process.timesteps(steps, spacing)`` from t_max to t_min and ends with one step to the
clean data (x0_pred at t_min), so a one-evaluation-per-step sampler costs exactly ``steps`` model calls. The
exception is the multistep solvers (``dpmpp_2m``, ``dpmpp_3m``, ``unipc``, ``ipndm``, ``dpmpp_2m_sde``): each
spends its ``steps`` calls on the first ``steps`` of ``steps + 1`` grid times and returns x at t_min (the
DPM-Solver authors' layout, which measured better at 5-10 NFE). A sampler's options are its keyword-only
parameters (``sampler_options``; ``configs/sampler/<name>.yaml`` lists them with their defaults). Every sampler
takes ``timesteps=``: explicit times (or a schedule file from ``optimize_timesteps``, ``gits.py``) in place of
``steps`` and ``spacing``. Randomness comes only from the ``generator``, in a fixed order of draws.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import Tensor

from diffusion.parameterization import clip_denoised as clip_denoised_model
from diffusion.processes.base import Process
from diffusion.samplers.ancestral import ddim, ddim_step, ddpm, ddpm_step
from diffusion.samplers.dpm_solver import dpmpp_2m
from diffusion.samplers.dpmpp_3m import dpmpp_3m
from diffusion.samplers.dpmpp_sde import dpmpp_2m_sde
from diffusion.samplers.ipndm import ipndm
from diffusion.samplers.unipc import unipc
from diffusion.samplers.ode import decode, encode, ode, probability_flow_drift
from diffusion.samplers.sde import euler_maruyama, pc
from diffusion.samplers.gits import optimize_timesteps  # noqa: E402  (after SAMPLERS' imports; it calls sample)

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm,
    "ddim": ddim,
    "euler_maruyama": euler_maruyama,
    "pc": pc,
    "ode": ode,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_3m": dpmpp_3m,
    "unipc": unipc,
    "ipndm": ipndm,
    "dpmpp_2m_sde": dpmpp_2m_sde,
}

_ALL_PROCESSES = ("ddpm", "vpsde", "subvpsde", "vesde")
#: which sampler runs on which process kind (``Process.name``), for the README table
SAMPLER_PROCESSES: dict[str, tuple[str, ...]] = {name: _ALL_PROCESSES for name in SAMPLERS}
SAMPLER_PROCESSES["ddpm"] = ("ddpm",)
_INSTEAD = {"ddpm": "use sampler='ddim' with eta=1 (the same posterior step) or sampler='euler_maruyama'"}


class CountingModel:
    """Wraps ``model(x, t, **kw)`` and counts its calls in ``.nfe`` (number of function evaluations).

    A call on a batch counts once, so classifier-free guidance, which evaluates the conditional and the
    unconditional prediction in one doubled batch, costs one NFE per step. Other attributes pass through.
    """

    def __init__(self, model: Callable[..., Tensor]):
        self.model = model
        self.nfe = 0

    def __call__(self, x: Tensor, t: Tensor, **kwargs) -> Tensor:
        self.nfe += 1
        return self.model(x, t, **kwargs)

    def __getattr__(self, name: str):
        if name == "model":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)


def sampler_options(sampler: str) -> dict[str, object]:
    """The options of ``sampler`` with their defaults (its keyword-only parameters)."""
    params = inspect.signature(_lookup(sampler)).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _lookup(sampler: str) -> Callable[..., Tensor]:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[sampler]


def _null_class(model, null_class: int | None) -> int:
    if null_class is not None:
        return null_class
    for owner in (model, getattr(model, "net", None)):
        for attr in ("null_class", "num_classes"):  # the null label is num_classes by convention
            value = getattr(owner, attr, None)
            if isinstance(value, int):
                return value
    raise ValueError("classifier-free guidance needs the null class label: pass null_class=<label> "
                     "(usually num_classes) or give the model a null_class / num_classes attribute")


def guided(model: Callable[..., Tensor], class_labels: Tensor, guidance_scale: float | None = None,
           null_class: int | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """``model(x, t)`` for fixed class labels; with ``guidance_scale`` w, classifier-free guidance (Ho & Salimans
    2022): eps = eps_uncond + w (eps_cond - eps_uncond), eps_uncond the prediction for the null label, one
    doubled batch per call. w = 1 is the plain conditional model, w = 0 the unconditional one."""
    if guidance_scale is None:
        return lambda x, t: model(x, t, class_labels=class_labels)
    null = torch.full_like(class_labels, _null_class(model, null_class))
    labels = torch.cat([class_labels, null])

    def guided_model(x: Tensor, t: Tensor) -> Tensor:
        eps_cond, eps_uncond = model(torch.cat([x, x]), torch.cat([t, t]), class_labels=labels).chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    return guided_model


@torch.no_grad()
def sample(process: Process, model: Callable[..., Tensor], shape: tuple[int, ...] | None, sampler: str = "ddim",
           steps: int = 50, generator: torch.Generator | None = None, x_T: Tensor | None = None, *,
           class_labels: Tensor | None = None, guidance_scale: float | None = None, null_class: int | None = None,
           progress: bool = False, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
           clip_denoised: float | None = None, **options) -> Tensor:
    """Draw samples: x_T from ``process.prior_sample(shape, generator)`` (unless given), then ``sampler``.

    steps: model evaluations for one-evaluation-per-step samplers (pc: steps * (1 + corrector_steps);
        ode: the grid of a fixed-step method, ignored by adaptive ones).
    class_labels: passed as ``model(x, t, class_labels=...)``; with ``guidance_scale`` w, classifier-free
        guidance eps_u + w (eps_c - eps_u), where the unconditional call uses the null label ``null_class``,
        else ``model.null_class``, ``model.num_classes`` (or the same on ``model.net``, as for ``EpsModel``).
    dtype: of the drawn x_T (float32 by default); a given x_T keeps its dtype unless ``dtype`` is passed.
    clip_denoised: clip every denoised estimate x0_pred to [-c, c] (images scaled to [-1, 1]: c = 1), as Ho et
        al.'s sampler does; see ``parameterization.clip_denoised``. None (default): the model as it is.
    options: the sampler's own (e.g. ddim: eta, spacing; see ``sampler_options``). Runs under no_grad.
    """
    fn = _lookup(sampler)
    valid = sampler_options(sampler)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for sampler {sampler!r}; "
                         f"valid options: {', '.join(valid) or 'none'}")
    kinds = SAMPLER_PROCESSES[sampler]
    if process.name in _ALL_PROCESSES and process.name not in kinds:
        raise ValueError(f"sampler {sampler!r} cannot run on {process!r} (only on {', '.join(kinds)}); "
                         f"{_INSTEAD.get(sampler, '')}")
    if x_T is None:
        if shape is None:
            raise ValueError("give a shape or x_T")
        gen_device = generator.device if generator is not None else device
        x = process.prior_sample(tuple(shape), generator, device=gen_device, dtype=dtype or torch.float32)
        x = x.to(device) if device is not None else x
    else:
        if shape is not None and tuple(shape) != tuple(x_T.shape):
            raise ValueError(f"shape {tuple(shape)} does not match x_T.shape {tuple(x_T.shape)}; pass shape=None")
        x = x_T.to(device=device or x_T.device, dtype=dtype or x_T.dtype)
    if class_labels is not None:
        class_labels = torch.as_tensor(class_labels, device=x.device)
        if class_labels.shape != (x.shape[0],):
            raise ValueError(f"class_labels must have shape ({x.shape[0]},), got {tuple(class_labels.shape)}")
        model = guided(model, class_labels, guidance_scale, null_class)
    elif guidance_scale is not None:
        raise ValueError("guidance_scale needs class_labels (the labels to guide towards)")
    if clip_denoised is not None:
        model = clip_denoised_model(model, process, clip_denoised)
    return fn(process, model, x, steps, generator, progress, **options)


__all__ = ["sample", "SAMPLERS", "SAMPLER_PROCESSES", "CountingModel", "guided", "sampler_options",
           "ddpm", "ddim", "ddpm_step", "ddim_step", "euler_maruyama", "pc", "ode", "encode", "decode",
           "probability_flow_drift", "dpmpp_2m", "dpmpp_3m", "unipc", "ipndm", "dpmpp_2m_sde", "optimize_timesteps"]
