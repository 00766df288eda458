"""Which sampler runs on which process: a sampler declares what it needs, a process what it offers.

Every process offers the Gaussian marginals (alpha, sigma), the SDE (f, g^2) and a prior; that is all most
samplers need, so they declare nothing. What only some processes have is named here as a capability:

    MARKOV_CHAIN   a discrete chain of steps whose integer index the network was trained on (DDPM); the
                   ancestral ``ddpm`` sampler walks that chain's Bayes posterior.

A process lists its capabilities in ``Process.offers``; a sampler declares its needs when it registers
(``@register_sampler(needs={MARKOV_CHAIN})``). ``check_sampler`` is the one place that decides whether a sampler
runs on a process, and its error names the samplers that would.

A sampler also declares the layout of its grid when it registers, so that whatever builds or fits a grid for it
(``grids.sampler_grid``, ``diffusion.fitting``) asks here instead of keeping a list of names:

    DENOISE   ``steps`` times from t_max to t_min, the model called at each, then one step to the clean data
              (x0_pred at t_min): ddpm, ddim, euler_maruyama, pc, ode, heun (the default)
    SOLVER    ``steps + 1`` times, the model called at all but the last, x returned there (the DPM-Solver
              authors' layout of the multistep solvers: ``@register_sampler(layout=SOLVER)``)
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterable

from torch import Tensor

from diffusion.errors import ConfigError
from diffusion.processes.base import MARKOV_CHAIN

#: grid layouts (see the module docstring)
DENOISE, SOLVER = "denoise", "solver"
LAYOUTS = (DENOISE, SOLVER)

#: what each capability means, for error messages
CAPABILITIES = {MARKOV_CHAIN: "a discrete Markov chain (DDPM)"}

#: name -> sampler function ``fn(process, model, x_T, steps, generator, progress, **options) -> x_0``
SAMPLERS: dict[str, Callable[..., Tensor]] = {}
_NEEDS: dict[str, frozenset[str]] = {}
_INSTEAD: dict[str, str] = {}
_LAYOUT: dict[str, str] = {}


def register_sampler(name: str | None = None, *, needs: Iterable[str] = (), instead: str = "",
                     layout: str = DENOISE) -> Callable[[Callable], Callable]:
    """Decorator: make ``fn`` available to ``sample()``, ``sample.py``, the sweep and training grids as ``name``
    (default: the function's name). Its keyword-only parameters are its options. ``instead``: advice for a
    process that lacks what it ``needs`` (added to the error). ``layout``: how it walks its grid, ``DENOISE`` or
    ``SOLVER`` (the multistep solvers; a grid fitted for it has steps + 1 times)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: choose one of {', '.join(LAYOUTS)}")

    def register(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        key = name or fn.__name__
        SAMPLERS[key] = fn
        _NEEDS[key] = frozenset(needs)
        _INSTEAD[key] = instead
        _LAYOUT[key] = layout
        return fn

    return register


def lookup(sampler: str) -> Callable[..., Tensor]:
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[sampler]


def sampler_options(sampler: str) -> dict[str, object]:
    """The options of ``sampler`` with their defaults (its keyword-only parameters)."""
    params = inspect.signature(lookup(sampler)).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_options(sampler: str, steps: int, options: dict[str, object]) -> None:
    """Raise ``ConfigError`` (one line) unless ``sampler`` is known, ``steps`` a positive integer and every option
    one of its own (their values are the sampler's to check)."""
    valid = sampler_options(sampler)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for sampler {sampler!r}; "
                          f"valid options: {', '.join(valid) or 'none'}")
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ConfigError(f"sampler steps must be a positive integer, got {steps!r}")


def layout(sampler: str) -> str:
    """How ``sampler`` walks its grid: ``DENOISE`` or ``SOLVER`` (declared at ``register_sampler``)."""
    lookup(sampler)
    return _LAYOUT.get(sampler, DENOISE)


def grid_size(sampler: str, steps: int) -> int:
    """How many times ``sampler`` walks for ``steps`` model calls: steps + 1 for the ``SOLVER`` layout, else steps."""
    return int(steps) + 1 if layout(sampler) == SOLVER else int(steps)


def solver_layout_samplers() -> tuple[str, ...]:
    """The registered samplers of the ``SOLVER`` layout, in registration order."""
    return tuple(name for name in SAMPLERS if layout(name) == SOLVER)


def needs(sampler: str) -> frozenset[str]:
    lookup(sampler)
    return _NEEDS[sampler]


def offers(process) -> frozenset[str]:
    return frozenset(getattr(process, "offers", ()))


def runs_on(sampler: str, process) -> bool:
    return needs(sampler) <= offers(process)


def samplers_for(process) -> list[str]:
    """The registered samplers that run on ``process``."""
    return [name for name in SAMPLERS if runs_on(name, process)]


def check_sampler(sampler: str, process) -> None:
    """Raise ``ConfigError`` (one line) unless ``sampler`` is known and runs on ``process``."""
    missing = needs(sampler) - offers(process)
    if missing:
        raise ConfigError(f"sampler {sampler!r} cannot run on {process!r}: it needs "
                          f"{', '.join(CAPABILITIES.get(m, m) for m in sorted(missing))}; use "
                          f"{', '.join(samplers_for(process))}" + (f" ({_INSTEAD[sampler]})" if _INSTEAD.get(sampler) else ""))

__all__ = ["MARKOV_CHAIN", "SAMPLERS", "DENOISE", "SOLVER", "LAYOUTS", "register_sampler", "lookup",
           "sampler_options", "check_options", "layout", "grid_size", "solver_layout_samplers", "needs", "offers", "runs_on",
           "samplers_for", "check_sampler"]
