"""What a config read from a file may build: the project's own classes, nothing else.

A checkpoint carries its run's config, and rebuilding the run means ``hydra.utils.instantiate`` on it. Hydra
calls whatever ``_target_`` names (``pathlib.Path.write_text`` would write a file), so a config that came from
a file is checked first, in full, before anything is imported or called (``check_config``):

* every ``_target_`` at any depth (inside ``_args_``, lists and keyword arguments too) must name a class or
  function registered here with ``@buildable``: the processes (every ``Process`` subclass registers itself),
  networks, losses, data sets, samplers, optimizers and learning-rate schedules of this package;
* no value may be an interpolation (``${...}``): a train.py checkpoint stores its config resolved, and
  resolving could read environment variables (``oc.env``) or call any registered resolver.

Configs a user types (the command line, their own YAML files) are not checked: they keep Hydra's full power.
A user who trusts a checkpoint passes ``trust_checkpoint_config=true`` (Python: ``trust_config=True``).
"""
from __future__ import annotations

import sys
from typing import Any, Callable, TypeVar

from omegaconf import OmegaConf

from diffusion.errors import UntrustedConfigError

T = TypeVar("T", bound=Callable[..., Any])

_REGISTERED: dict[str, Callable[..., Any]] = {}
# the packages whose import registers the buildable classes (imported before a check)
_PACKAGES = ("diffusion.processes", "diffusion.nn", "diffusion.losses", "diffusion.data", "diffusion.samplers",
             "diffusion.training.optim")


def buildable(obj: T) -> T:
    """Register ``obj`` (a class or function of this project) as a target a saved config may name."""
    _REGISTERED[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return obj


def allowed_targets() -> set[str]:
    """Every ``_target_`` string a file's config may use: each registered object's defining path and the
    public paths of the packages that re-export it (``diffusion.processes.DDPM`` and
    ``diffusion.processes.ddpm.DDPM``)."""
    import importlib

    for package in _PACKAGES:
        importlib.import_module(package)
    names = set(_REGISTERED)
    for path, obj in _REGISTERED.items():
        parts = obj.__module__.split(".")
        for i in range(1, len(parts)):
            owner = sys.modules.get(".".join(parts[:i]))
            if owner is not None and getattr(owner, obj.__name__, None) is obj:
                names.add(f"{'.'.join(parts[:i])}.{obj.__name__}")
    return names


def check_config(cfg: Any, source: str) -> None:
    """Raise ``UntrustedConfigError`` (one line) if ``cfg`` would build anything but the project's own classes
    or resolve an interpolation; ``source`` names the file in the message. Nothing is resolved or called."""
    node = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    allowed = allowed_targets()
    advice = ("load only files you trust; if you trust this one, pass trust_checkpoint_config=true "
              "(Python: trust_config=True)")

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            target = value.get("_target_")
            if "_target_" in value and not (isinstance(target, str) and target in allowed):
                raise UntrustedConfigError(
                    f"{source}: its saved config sets {key + '.' if key else ''}_target_={target!r}, which is not one "
                    f"of this project's own classes, so nothing was built or run; {advice}")
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")
        elif isinstance(value, str) and "${" in value:
            raise UntrustedConfigError(
                f"{source}: its saved config has an interpolation at {key} ({value[:60]!r}); train.py saves resolved "
                f"configs, and resolving it could read environment variables or files, so nothing was built; {advice}")

    walk(node, "")


__all__ = ["buildable", "allowed_targets", "check_config"]
