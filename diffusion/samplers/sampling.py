"""``sample``, the one entry point that draws samples with a registered sampler, and the model wrappers it uses:
``CountingModel`` (counts model evaluations) and ``guided`` (class labels, classifier-free guidance)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.parameterization import clip_denoised as clip_denoised_model
from diffusion.processes.base import Process
from diffusion.samplers.registry import check_options, check_sampler, lookup


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


def _null_class(model, null_class: int | None) -> int:
    if null_class is not None:
        return null_class
    for owner in (model, getattr(model, "net", None)):
        for attr in ("null_class", "num_classes"):  # the null label is num_classes by convention
            value = getattr(owner, attr, None)
            if isinstance(value, int):
                return value
    raise ConfigError("classifier-free guidance needs the null class label: pass null_class=<label> "
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
    check_options(sampler, steps, options)  # name, steps and option names; the sampler checks its options' values
    check_sampler(sampler, process)
    fn = lookup(sampler)
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
        raise ConfigError("guidance_scale needs class_labels (the labels to guide towards)")
    if clip_denoised is not None:
        model = clip_denoised_model(model, process, clip_denoised)
    return fn(process, model, x, steps, generator, progress, **options)


__all__ = ["sample", "CountingModel", "guided"]
