"""From a config (or a checkpoint's saved config) to the objects: process, network, eps model, loss.

    model, process, cfg = load_model("runs/2025-01-01_12-00-00")     # latest checkpoint, EMA weights
    x0 = sample(process, model, (16, 1, 28, 28), sampler="ddim", steps=50, generator=g)

sample.py and evaluate.py call ``load_model``; train.py calls ``build_from_config``.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from diffusion.parameterization import PREDICTIONS, EpsModel
from diffusion.preconditioning import EDMPrecond
from diffusion.processes.base import Process
from diffusion.training.checkpoint import CheckpointError, load_checkpoint
from diffusion.training.errors import ConfigError


def build_process(cfg: DictConfig) -> Process:
    process = instantiate(cfg.process)
    if not isinstance(process, Process):
        raise ConfigError(f"process config built a {type(process).__name__}, not a Process: check process._target_")
    return process


def build_network(cfg: DictConfig) -> nn.Module:
    return instantiate(cfg.model)


def build_eps_model(net: nn.Module, process: Process, cfg: DictConfig) -> EpsModel:
    prediction = str(cfg.get("prediction", "eps"))
    if prediction not in PREDICTIONS:
        raise ConfigError(f"prediction={prediction!r} is not one of {', '.join(PREDICTIONS)}: set prediction=eps")
    if prediction == "edm":
        return EDMPrecond(net, process)
    return EpsModel(net, process, prediction=prediction)


def build_loss(cfg: DictConfig, process: Process) -> Any:
    """The loss object ``loss(model, x0, class_labels=None, generator=None) -> (batch,)`` for ``process``."""
    make = instantiate(cfg.loss)
    try:
        return make(process)
    except (ValueError, TypeError) as e:  # the loss's own check, e.g. a DDPM-only loss on an SDE
        raise ConfigError(f"loss {cfg.loss.get('_target_', '?')} cannot train on {process!r}: {e}") from None


def build_from_config(cfg: DictConfig) -> tuple[EpsModel, Process]:
    """A freshly initialised eps model (``model.net`` is the network) and its process."""
    process = build_process(cfg)
    return build_eps_model(build_network(cfg), process, cfg), process


def config_from_checkpoint(state: dict) -> DictConfig:
    try:
        cfg = OmegaConf.create(state["config"])
    except Exception as e:  # noqa: BLE001 - any YAML problem means the same thing here
        raise CheckpointError(f"{state.get('path', 'checkpoint')}: its saved config does not parse ({type(e).__name__}): the file is damaged") from None
    if not isinstance(cfg, DictConfig) or "model" not in cfg or "process" not in cfg:
        raise CheckpointError(f"{state.get('path', 'checkpoint')}: its saved config lacks model/process: not a train.py checkpoint")
    return cfg


def load_model(ckpt: str | os.PathLike, use_ema: bool = True, device: str | torch.device = "cpu") -> tuple[EpsModel, Process, DictConfig]:
    """Rebuild the trained eps model from a checkpoint file or a run folder (its latest checkpoint).

    Returns ``(model, process, cfg)``: the model in eval mode on ``device`` with the EMA weights
    (``use_ema=False``: the raw trained weights), the process it was trained on, and the run's config.
    """
    state = load_checkpoint(ckpt, map_location="cpu")
    cfg = config_from_checkpoint(state)
    model, process = build_from_config(cfg)
    weights = state.get("ema") if use_ema else None
    if use_ema and not weights:
        raise CheckpointError(f"{state['path']} holds no EMA weights: call load_model(..., use_ema=False)")
    try:
        model.net.load_state_dict(weights if use_ema else state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{state['path']}: weights do not fit the network of its config ({str(e).splitlines()[0][:160]})") from None
    return model.to(device).eval(), process, cfg
