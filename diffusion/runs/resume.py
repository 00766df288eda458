"""``train.py resume=true``: a stopped run's checkpoint and the config it continues with."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from diffusion.runs.load import config_from_checkpoint
from diffusion.training.build import check_weights_fit
from diffusion.training.checkpoint import load_checkpoint, require_checkpoints
from diffusion.training.setup import resume_config

log = logging.getLogger("train")


def resume_run(run_dir: Path, cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, dict]:
    """The latest checkpoint of ``run_dir`` (one line if there is none) and the run's config: the checkpoint's own
    (through the allowlist unless ``cfg.trust_checkpoint_config``) with this command's trainer.* and sampler.*
    ``overrides`` (``training.setup.resume_config``), checked against the weights it carries on the meta device
    before anything is allocated."""
    state = load_checkpoint(require_checkpoints(run_dir))
    saved = config_from_checkpoint(state, trust=cfg.trust_checkpoint_config)
    cfg = resume_config(saved, cfg, overrides)
    check_weights_fit(cfg, state)
    log.info(f"resuming {state['path']} at step {state['step']}")
    return cfg, state


__all__ = ["resume_run"]
