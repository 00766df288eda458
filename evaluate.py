#!/usr/bin/env python
"""Evaluate a trained model: likelihoods, a sampler sweep, or FID of a set of samples.

    python evaluate.py ckpt=runs/<run> task=likelihood                  # ODE NLL, SDE and DDPM bounds, bits/dim
    python evaluate.py ckpt=runs/<run> task=likelihood likelihood.divergence=exact likelihood.t_samples=null
    python evaluate.py ckpt=runs/<run> task=sweep sweep.samplers=[ddim,dpmpp_2m] sweep.steps=[5,10,20] n=1000
    python evaluate.py task=fid samples=runs/<run>/samples/ddim_50_seed0/samples.npz [ckpt=runs/<run> | data=cifar10]
    python evaluate.py task=fid samples=my_pngs/ data=folder data.root=real_pngs/ data.image_size=64
    python evaluate.py ckpt=runs/<run> task=schedule sampler=ipndm steps=5   # GITS grid -> eval/schedules/ipndm_5.json
    python evaluate.py ckpt=hf:google/ddpm-cifar10-32 task=likelihood data=cifar10   # a diffusers model (or folder)
    python evaluate.py ckpt=runs/<run> task=export out=exported/   # a diffusers folder: DDPMPipeline.from_pretrained

Results go to <run>/eval/ (likelihood.md|json, gamma_ema.json (Analytic-DPM's Gamma, reused by samplers),
sweep/sweep.md|json|png, fid.json) and the tables are printed.
Quality: FID and KID through torch-fidelity's Inception when its weights can be had (else "n/a" with a one-line
reason), and for MNIST the digit FD/KID report of the shipped digit classifier; each beside its floor at the same n. A bad request is one line on
stderr and exit code 2. Configuration: configs/evaluate.yaml; the tasks: diffusion/evaluation/tasks.py.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig


def run(cfg: DictConfig) -> dict:
    """The task ``cfg.task`` names (``diffusion/evaluation/tasks.py``: likelihood, sweep, fid, schedule, export)."""
    from diffusion.evaluation.tasks import run as run_task

    return run_task(cfg)


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
def hydra_main(cfg: DictConfig) -> None:
    from diffusion.cli import guarded

    guarded(run, cfg)


def main() -> int:
    from diffusion.cli import run_main

    return run_main("evaluate.py", hydra_main)


if __name__ == "__main__":
    sys.exit(main())
