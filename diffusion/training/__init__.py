"""Training: the loop (loop.py), checkpoints (checkpoint.py), EMA (ema.py), data-parallel helpers
(distributed.py), TensorBoard/PNG output (logging.py), and building models from configs (build.py).

    model, process, cfg = load_model("runs/<run>")        # a trained eps model, EMA weights (diffusion.runs)
"""
from __future__ import annotations

from diffusion.training.build import build_from_config, build_loss, build_network, build_process
from diffusion.training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint
from diffusion.training.ema import EMA, ema_decay_at
from diffusion.training.errors import ConfigError, TrainingError
from diffusion.training.loop import StopReason, Trainer, warmup_lr

__all__ = ["Trainer", "StopReason", "warmup_lr", "EMA", "ema_decay_at", "load_model", "build_from_config", "build_network",
           "build_process", "build_loss", "load_checkpoint", "save_checkpoint", "list_checkpoints",
           "CheckpointError", "ConfigError", "TrainingError"]


def __getattr__(name: str):
    # loading a trained run lives in diffusion.runs, which imports this package's checkpoint module
    if name == "load_model":
        from diffusion.runs.load import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
