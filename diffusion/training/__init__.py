"""Training: the loop (loop.py) and what it is made of: the time budget (budget.py), the precision (precision.py),
the random streams (rng.py), the clean stop on a signal (signals.py), periodic actions (actions.py), checkpoints
(checkpoint.py), EMA (ema.py), data-parallel helpers (distributed.py), TensorBoard/PNG output (logging.py), and
building models from configs (build.py). Evaluations during training come from above (diffusion.evaluation.periodic);
a trained run is loaded by diffusion.runs:

    model, process, cfg = diffusion.runs.load_model("runs/<run>")   # a trained eps model, EMA weights
"""
from __future__ import annotations

from diffusion.training.build import build_from_config, build_loss, build_network, build_process
from diffusion.training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint
from diffusion.training.ema import EMA, ema_decay_at
from diffusion.training.errors import ConfigError, TrainingError
from diffusion.training.loop import Periodic, StopReason, Trainer, TrainingView, warmup_lr

__all__ = ["Trainer", "StopReason", "Periodic", "TrainingView", "warmup_lr", "EMA", "ema_decay_at", "build_from_config",
           "build_network", "build_process", "build_loss", "load_checkpoint", "save_checkpoint", "list_checkpoints",
           "CheckpointError", "ConfigError", "TrainingError"]

