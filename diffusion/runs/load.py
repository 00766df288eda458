"""A trained run: checkpoint -> model, process, config, and what the run's data look like.

    run = load_run("runs/2025-01-01_12-00-00")           # latest checkpoint, EMA weights
    x0 = sample(run.process, run.model, (16, *run.shape), sampler="ddim", steps=50, generator=g)

The model and process are rebuilt from the checkpoint's saved training config; the user never repeats them.
That config may build only the project's own classes (``diffusion.buildable``) unless the caller trusts it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from diffusion.buildable import check_config
from diffusion.errors import CheckpointError, EvaluationError
from diffusion.parameterization import EpsModel
from diffusion.processes.base import Process
from diffusion.training.checkpoint import CKPT_DIR, load_checkpoint, resolve_checkpoint


def config_from_checkpoint(state: dict, trust: bool = False) -> DictConfig:
    """The run config a checkpoint carries. Unless ``trust``, it is checked before anything uses it: every
    ``_target_`` must name one of the project's own classes and no value may be an interpolation
    (``diffusion.buildable``); otherwise ``UntrustedConfigError``, and nothing was built or run."""
    try:
        cfg = OmegaConf.create(state["config"])
    except Exception as e:  # noqa: BLE001 - any YAML problem means the same thing here
        raise CheckpointError(f"{state.get('path', 'checkpoint')}: its saved config does not parse ({type(e).__name__}): the file is damaged") from None
    if not isinstance(cfg, DictConfig) or "model" not in cfg or "process" not in cfg:
        raise CheckpointError(f"{state.get('path', 'checkpoint')}: its saved config lacks model/process: not a train.py checkpoint")
    if not trust:
        check_config(cfg, state.get("path", "checkpoint"))
    return cfg


def saved_config(ckpt: str | os.PathLike, trust: bool = False) -> tuple[DictConfig, Path]:
    """The run config saved in a checkpoint file (or a run folder's latest) and that file's path, checked as
    ``config_from_checkpoint`` checks it; no model is built."""
    state = load_checkpoint(ckpt)
    return config_from_checkpoint(state, trust=trust), Path(state["path"])


def load_model(ckpt: str | os.PathLike, use_ema: bool = True, device: str | torch.device = "cpu",
               trust_config: bool = False) -> tuple[EpsModel, Process, DictConfig]:
    """Rebuild the trained eps model from a checkpoint file or a run folder (its latest checkpoint).

    Returns ``(model, process, cfg)``: the model in eval mode on ``device`` with the EMA weights
    (``use_ema=False``: the raw trained weights), the process it was trained on, and the run's config.
    The saved config may build only the project's own classes unless ``trust_config=True``.
    """
    from diffusion.training.build import build_from_config, check_weights_fit

    state = load_checkpoint(ckpt, map_location="cpu")
    cfg = config_from_checkpoint(state, trust=trust_config)
    check_weights_fit(cfg, state)  # on the meta device: a config that asks for more than its weights allocates nothing
    model, process = build_from_config(cfg)
    weights = state.get("ema") if use_ema else None
    if use_ema and not weights:
        raise CheckpointError(f"{state['path']} holds no EMA weights: call load_model(..., use_ema=False)")
    try:
        model.net.load_state_dict(weights if use_ema else state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{state['path']}: weights do not fit the network of its config ({str(e).splitlines()[0][:160]})") from None
    return model.to(device).eval(), process, cfg


def run_dir_of(ckpt: str | os.PathLike) -> Path:
    """The train.py run folder of a checkpoint file (``<run>/checkpoints/ckpt_<step>.pt``) or run folder."""
    p = Path(ckpt)
    if p.is_dir():
        return p.parent if p.name == CKPT_DIR and not (p / CKPT_DIR).is_dir() else p
    return p.parent.parent if p.parent.name == CKPT_DIR else p.parent


def build_data(data_cfg: DictConfig, split: str):
    """The data set of a config with raw uint8 images and no augmentation. Nothing is downloaded: the config
    may come from a checkpoint, and its download root is the checkpoint author's choice, not the user's."""
    from hydra.utils import instantiate

    kwargs: dict[str, Any] = {"split": split, "as_uint8": True}
    if "flip" in data_cfg:
        kwargs["flip"] = False
    if "download" in data_cfg:
        kwargs["download"] = False
    return instantiate(data_cfg, **kwargs)


def num_classes_of(model, cfg: DictConfig) -> int | None:
    """K for a class-conditional model (labels 0..K-1; K itself is the null class), None otherwise."""
    for owner in (model, getattr(model, "net", None)):
        k = getattr(owner, "num_classes", None)
        if isinstance(k, int):
            return k
    k = OmegaConf.select(cfg, "model.num_classes")
    return int(k) if k is not None else None


def sample_shape(cfg: DictConfig) -> tuple[tuple[int, int, int], str | None]:
    """Per-sample shape (C, H, W) of the run's data; from the data set itself (a train.py network runs at any
    size the data has), else from the model config when the data set cannot be opened here (with a note)."""
    shape = OmegaConf.select(cfg, "data_shape")
    if shape is not None:
        return tuple(int(s) for s in shape), None
    try:
        data = build_data(cfg.data, "test")
        return (int(data.channels), int(data.image_size), int(data.image_size)), None
    except Exception as e:  # noqa: BLE001 - any failure: fall back on the network's own size
        c, s = OmegaConf.select(cfg, "model.in_channels"), OmegaConf.select(cfg, "model.image_size")
        if c is None or s is None:
            raise EvaluationError(f"cannot tell the image shape: the run's data set does not open here ({_first(e)}) "
                                  "and its model config has no in_channels/image_size") from None
        return (int(c), int(s), int(s)), f"data set unavailable here ({_first(e)}); using the model's {c}x{s}x{s}"


def _first(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


@dataclass
class TrainedRun:
    """A checkpoint's model (eval mode, on its device), process and config, with where it came from."""

    model: EpsModel
    process: Process
    cfg: DictConfig
    path: Path  # the checkpoint file (an imported diffusers model: its folder)
    ema: bool = True  # the EMA weights (false: the raw trained weights)

    @property
    def run_dir(self) -> Path:
        return run_dir_of(self.path)

    @property
    def provenance(self) -> dict[str, str | bool]:
        """Where the weights come from (checkpoint file, EMA or raw), as files fitted to them record it
        (``diffusion.fitting``)."""
        return {"checkpoint": str(self.path.resolve()), "ema": self.ema}

    @property
    def weights(self) -> dict[str, str | bool]:
        """Deprecated alias of ``provenance`` (it never held the weights)."""
        return self.provenance

    @property
    def num_classes(self) -> int | None:
        return num_classes_of(self.model, self.cfg)

    def shape(self) -> tuple[tuple[int, int, int], str | None]:
        """Per-sample (C, H, W) and a note when it had to come from the model config."""
        return sample_shape(self.cfg)

    def data(self, split: str):
        """The run's data set (uint8, no augmentation, never downloaded)."""
        if self.cfg.get("data") is None:  # an imported model (diffusion.pretrained) does not say what it learned
            raise EvaluationError(f"{self.path} names no data set: pass data=<a configs/data "
                                  "option, e.g. cifar10> (evaluate.py) or images=<an .npz or a folder> (sample.py)")
        return build_data(self.cfg.data, split)


def load_run(ckpt: str | os.PathLike, ema: bool = True, device: str | torch.device = "cpu",
             trust_config: bool = False) -> TrainedRun:
    """The trained run of a checkpoint file or run folder; ``CheckpointError`` (one line) on a bad file or on a
    saved config that names anything but the project's own classes (unless ``trust_config``). A diffusers DDPM
    folder or ``hf:<id>`` loads through ``diffusion.pretrained`` (its config is read as data, never trusted)."""
    from diffusion.pretrained import is_diffusers_source, load_diffusers

    if is_diffusers_source(ckpt):
        model, process, cfg, folder = load_diffusers(ckpt, device)
        return TrainedRun(model, process, cfg, folder, bool(ema))
    path = resolve_checkpoint(ckpt)
    model, process, cfg = load_model(path, use_ema=ema, device=device, trust_config=trust_config)
    return TrainedRun(model, process, cfg, path, bool(ema))


__all__ = ["TrainedRun", "load_run", "load_model", "config_from_checkpoint", "saved_config", "run_dir_of", "build_data",
           "num_classes_of", "sample_shape"]
