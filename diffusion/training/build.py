"""From a config to the objects: process, network, eps model, loss (train.py and ``diffusion.runs.load_model``)."""
from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from diffusion.consistency import ConsistencyModel
from diffusion.errors import CheckpointError
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
    return ConsistencyModel(model, process) if is_consistency_student(cfg) else model


def is_consistency_student(cfg: DictConfig) -> bool:
    """Whether ``cfg`` is a consistency-distilled student's (``distill.method: consistency``): its network is f, not
    a score, so it samples with ``sampler=consistency`` and has no ODE likelihood."""
    method = OmegaConf.select(cfg, "distill.method", default=None)
    return str(getattr(method, "value", method)) == "consistency"


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


def check_weights_fit(cfg: DictConfig, state: dict[str, Any]) -> None:
    """Refuse a checkpoint whose config describes another network than its weights, before anything is allocated.

    The config's network is built on the ``meta`` device (shapes without storage: no memory, however large the
    config says it is) and every parameter and buffer shape is compared with the checkpoint's state dicts
    (``model``, and ``ema`` when present). A config doctored to ``model.base_channels=40000`` would otherwise make
    the real construction allocate tens of GB before ``load_state_dict`` could compare anything. Raises a one-line
    ``CheckpointError`` naming the first difference and the sizes both sides imply."""
    where = state.get("path", "checkpoint")
    try:
        with _on_meta():
            net = build_network(cfg)
    except (TypeError, ValueError, RuntimeError) as e:  # arguments the network refuses
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{where}: its config does not build a network ({first}): the file is damaged") from None
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    need = sum(v.numel() * v.element_size() for v in net.state_dict().values())
    for name in ("model", "ema"):
        weights = state.get(name)
        if not isinstance(weights, dict) or (name == "ema" and not weights):
            continue
        carried = {k: tuple(v.shape) for k, v in weights.items() if isinstance(v, torch.Tensor)}
        differ = [k for k in expected if k in carried and carried[k] != expected[k]]
        missing = [k for k in expected if k not in carried]
        extra = [k for k in carried if k not in expected]
        if not (differ or missing or extra):
            continue
        if differ:
            k = differ[0]
            first = f"{k} is {_shape(expected[k])} in the config's network but {_shape(carried[k])} in the file"
        elif missing:
            first = f"the file lacks {missing[0]}"
        else:
            first = f"the file has {extra[0]}, which the config's network does not"
        more = len(differ) + len(missing) + len(extra) - 1
        have = sum(v.numel() * v.element_size() for v in weights.values() if isinstance(v, torch.Tensor))
        raise CheckpointError(
            f"{where}: its {name} weights do not fit the network its config describes ({first}"
            f"{f', and {more} more' if more else ''}; the config's network needs {_bytes(need)}, the file carries "
            f"{_bytes(have)}): the config was changed after the weights were saved; nothing was built: use the "
            "checkpoint as train.py wrote it")


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "a scalar"


def _bytes(n: int) -> str:
    from diffusion.files import human_bytes

    return human_bytes(n)


def _on_meta():
    """A context in which tensor constructors make meta tensors (shapes, no storage), except a small ``arange``,
    made on the CPU: a meta ``arange`` goes through torch's Python decompositions, whose first use imports sympy
    (~1 s). Without torch's private list of constructors, plain ``torch.device("meta")``."""
    try:
        from torch.overrides import TorchFunctionMode
        from torch.utils._device import _device_constructors
    except ImportError:
        return torch.device("meta")

    constructors = _device_constructors()

    class OnMeta(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func in constructors and kwargs.get("device") is None:
                small = func is torch.arange and all(isinstance(a, (int, float)) and abs(a) <= 1 << 16 for a in args)
                kwargs["device"] = "cpu" if small else "meta"
            return func(*args, **kwargs)

    return OnMeta()
