"""``SamplerSpec``: one configured sampler (name, steps, options), validated once and used everywhere.

``configs/sampler/<name>.yaml`` builds one (``_target_: diffusion.samplers.SamplerSpec``); ``sample.py``, the sweep
and the training grids call it. A wrong option name or step count fails when the spec is made, a wrong option value
(or a sampler the process cannot run) at ``check``; both before any model runs:

    spec = SamplerSpec("ddim", steps=50, eta=1.0)
    spec.check(process)                           # ConfigError if the process cannot run it
    x0 = spec(process, model, (16, 1, 28, 28), generator=g)

A configured spec may name its grid (or iPNDM's weights) by reference: a schedule file, or ``fitted``. Such a spec
is checked around the reference but cannot sample: ``diffusion.fitting.resolve_sampler`` (one layer up) turns it
into one with the values, which records where they came from (``sources``) and names its walk (``label``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from diffusion.buildable import buildable
from diffusion.errors import ConfigError
from diffusion.samplers.grids import REFERENCE_OPTIONS, is_reference
from diffusion.samplers.registry import check_options, check_sampler, lookup
from diffusion.samplers.sampling import sample


class _ReachedModel(Exception):
    """Raised by ``SamplerSpec.check``'s stand-in model: the sampler's own checks have all passed."""


@buildable
class SamplerSpec:
    def __init__(self, name: str, steps: int = 50, **options: Any):
        check_options(name, steps, options)
        self.name, self.steps, self.options = str(name), int(steps), dict(options)
        #: option -> the file its value was read from, where the layer above resolved a reference (for manifests)
        self.sources: dict[str, str] = {}
        #: the name of a resolved grid in ``label`` (e.g. ``5_fitted``), set with ``sources``
        self.grid_name: str | None = None

    def check(self, process) -> "SamplerSpec":
        """Raise ``ConfigError`` unless this sampler runs on ``process`` with these options; returns self.

        Beyond the process's capabilities, the sampler itself is run up to its first model call on a 1 x 1 input,
        so every check it makes of its options and grid (``order=7``, times outside the process's) fails here,
        before a checkpoint's sampling starts, and not after a progress bar is drawn. An option given by reference
        (a schedule file, ``fitted``: ``grids.REFERENCE_OPTIONS``) is left to the layer that resolves it
        (``diffusion.fitting.resolve_sampler``, which checks the resolved spec again)."""
        check_sampler(self.name, process)
        options = {k: v for k, v in self.options.items() if not (k in REFERENCE_OPTIONS and is_reference(v))}

        def first_call(x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
            raise _ReachedModel

        try:  # its own generator: a sampler that draws noise before its first call leaves the global RNG alone
            lookup(self.name)(process, first_call, torch.zeros(1, 1), self.steps, torch.Generator().manual_seed(0),
                              False, **options)
        except _ReachedModel:
            pass
        return self

    def replace(self, **changes: Any) -> "SamplerSpec":
        """A copy with ``steps`` or options changed (validated again). It keeps the resolved grid's ``sources`` and
        ``grid_name`` unless the changes touch the grid or the weights."""
        merged = {"steps": self.steps, **self.options, **changes}
        spec = SamplerSpec(self.name, **merged)
        if not set(changes) & set(REFERENCE_OPTIONS):
            spec.sources, spec.grid_name = dict(self.sources), self.grid_name
        return spec

    def with_values(self, grid_name: str | None, sources: dict[str, str], **values: Any) -> "SamplerSpec":
        """A copy with references replaced by their values (``diffusion.fitting.resolve_sampler`` calls it):
        ``values`` the options (timesteps, coefficients), ``sources`` the file each was read from, ``grid_name``
        the grid's name in ``label``."""
        spec = self.replace(**values)
        spec.sources, spec.grid_name = dict(sources), grid_name
        return spec

    def __call__(self, process, model: Callable[..., Tensor], shape, generator=None, **kwargs: Any) -> Tensor:
        """``diffusion.sample`` with this sampler; ``kwargs``: sample()'s own (x_T, class_labels, device, ...)."""
        return sample(process, model, shape, sampler=self.name, steps=self.steps, generator=generator,
                      **self.options, **kwargs)

    @property
    def label(self) -> str:
        """``<name>_<steps>``, the name of sample.py's output folder and of the sweep's grids. With explicit
        ``timesteps`` it names the walk that runs: ``<name>_<steps>_fitted`` for a grid fitted to the run
        (``sampler=fewstep sampler.steps=5``: ``unipc_5_fitted``; with a digest after it where the grid was fitted
        with other settings than the standard file's), ``<name>_<file stem>`` for a schedule file
        (``unipc_6.json`` gives ``<name>_unipc_6``), ``<name>_<len - 1>_grid`` for a list of times."""
        grid = self.options.get("timesteps")
        if grid is None:
            return f"{self.name}_{self.steps}"
        if self.grid_name:
            return f"{self.name}_{self.grid_name}"
        if is_reference(grid):
            return f"{self.name}_{Path(grid).stem}"
        return f"{self.name}_{len(grid) - 1}_grid"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps, **self.options}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SamplerSpec) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"SamplerSpec({self.name!r}, steps={self.steps}{options})"


def sampler_from_config(cfg: Any) -> SamplerSpec:
    """A ``SamplerSpec`` from a sampler config: a ``configs/sampler`` node (with ``_target_``) or a plain mapping
    ``{name, steps, **options}``. A config error is raised as one ``ConfigError``, not Hydra's wrapper."""
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    target = node.pop("_target_", None)
    if target not in (None, "diffusion.samplers.SamplerSpec", "diffusion.samplers.spec.SamplerSpec"):
        raise ConfigError(f"sampler._target_={target!r}: a sampler config builds diffusion.samplers.SamplerSpec")
    if "name" not in node:
        raise ConfigError("the sampler config has no name: use sampler=<a configs/sampler option>")
    return SamplerSpec(**node)


__all__ = ["SamplerSpec", "sampler_from_config"]
