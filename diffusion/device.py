"""The one place a device name becomes a ``torch.device``: train.py, sample.py and evaluate.py all call it."""
from __future__ import annotations

import torch

from diffusion.errors import ConfigError


def pick_device(name: str = "auto", local_rank: int = 0, key: str = "device") -> torch.device:
    """``auto``: the GPU when CUDA is available (this process's one under torchrun), else the CPU. ``key`` names
    the config key in the one-line error for a CUDA device on a machine without CUDA."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}={name} but CUDA is not available here: use {key}=cpu or {key}=auto")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


__all__ = ["pick_device"]
