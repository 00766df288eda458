"""From a config to the objects: process, network, eps model, loss (train.py and ``diffusion.runs.load_model``)."""
from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from diffusion.consistency import ConsistencyModel
from diffusion.parameterization import PREDICTIONS, EpsModel
from diffusion.preconditioning import EDMPrecond
from diffusion.processes.base import Process
from diffusion.training.errors import ConfigError


def resolve_formulation(cfg: DictConfig) -> None:
    """Make ``loss: auto`` and ``prediction: auto`` concrete, in place, so that the run's config.yaml and its
    checkpoints name what was trained: the loss is the process's ``default_loss`` (flow matching for rectified
    flow, EDM's loss for EDM, eps-MSE for the others) and the prediction the one the loss trains natively (its
    ``prediction``: velocity for flow matching, edm for EDM's loss, else eps). Explicit choices stay."""
    from hydra.utils import get_class

    from diffusion.config import generated_schemas
    from diffusion.losses import auto_loss

    if str(cfg.loss.get("_target_", "")) == "diffusion.losses.default_loss":
        cfg.loss = OmegaConf.structured(generated_schemas()[("schema/loss", auto_loss(build_process(cfg)))])
    if str(cfg.get("prediction", "eps")) == "auto":
        cfg.prediction = getattr(get_class(str(cfg.loss._target_)), "prediction", "eps")


def build_process(cfg: DictConfig) -> Process:
    process = instantiate(cfg.process)
    if not isinstance(process, Process):
        raise ConfigError(f"process config built a {type(process).__name__}, not a Process: check process._target_")
    return process


def build_network(cfg: DictConfig) -> nn.Module:
    return instantiate(cfg.model)


def build_eps_model(net: nn.Module, process: Process, cfg: DictConfig) -> EpsModel:
    """``model(x, t) -> eps`` around ``net`` as ``cfg.prediction`` says; a consistency-distilled student
    (``distill.method: consistency``) is wrapped once more, in ``ConsistencyModel``."""
    prediction = str(cfg.get("prediction", "eps"))
    if prediction not in PREDICTIONS:
        raise ConfigError(f"prediction={prediction!r} is not one of {', '.join(PREDICTIONS)}: set prediction=eps")
    model = EDMPrecond(net, process) if prediction == "edm" else EpsModel(net, process, prediction=prediction)
    method = OmegaConf.select(cfg, "distill.method")
    if str(getattr(method, "value", method)) == "consistency":
        return ConsistencyModel(model, process)
    return model


def build_loss(cfg: DictConfig, process: Process) -> Any:
    """The loss object ``loss(model, x0, class_labels=None, generator=None) -> (batch,)`` for ``process``
    (``loss: auto`` is resolved first, in place)."""
    resolve_formulation(cfg)
    make = instantiate(cfg.loss)
    try:
        return make(process)
    except (ValueError, TypeError) as e:  # the loss's own check, e.g. a DDPM-only loss on an SDE
        raise ConfigError(f"loss {cfg.loss.get('_target_', '?')} cannot train on {process!r}: {e}") from None


def build_from_config(cfg: DictConfig) -> tuple[EpsModel, Process]:
    """A freshly initialised eps model (``model.net`` is the network) and its process (``loss: auto`` and
    ``prediction: auto`` are resolved first, in place)."""
    resolve_formulation(cfg)
    process = build_process(cfg)
    return build_eps_model(build_network(cfg), process, cfg), process
