"""Helpers for the training tests: composing train.yaml in-process, a tiny in-memory data set,
and running train.py in a subprocess (one thread, the tiny U-Net, a few steps)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from diffusion import config as schema
from diffusion.data import InMemoryImages

REPO = Path(__file__).resolve().parents[2]

# every subprocess: one thread (the machine is shared), tiny network, tiny schedule, no progress bar
TINY = ["model=unet_tiny", "trainer=smoke", "trainer.progress=false", "sampler.steps=2"]


def compose_train(*overrides: str) -> DictConfig:
    """train.yaml composed as train.py would, without running anything."""
    schema.register()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def tiny_cfg(*overrides: str) -> DictConfig:
    return compose_train("model=unet_tiny", "trainer=smoke", "trainer.progress=false", "trainer.sample_every=0",
                         "sampler.steps=2", *overrides)


def tiny_images(n: int = 40, size: int = 8, flip: bool = False, seed: int = 0) -> InMemoryImages:
    """n random 1-channel size x size uint8 images with labels 0..9 (5 batches of 8 per epoch for n=40)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 10
    return InMemoryImages(images, labels, num_classes=10, split="train", flip=flip)


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_train(*args: str, cwd: Path | str = REPO, timeout: float = 120, launcher: list[str] | None = None,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable]) + [str(REPO / "train.py"), *args]
    return subprocess.run(cmd, cwd=cwd, env={**subprocess_env(), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
