#!/usr/bin/env python
"""Train a diffusion model.

    python train.py                                   # unet_mnist, rectified flow, 5,000 bundled MNIST digits
    python train.py process=vpsde loss=dsm trainer.max_steps=5000
    python train.py experiment=ddpm_cifar10           # Ho et al. 2020's CIFAR-10 recipe (needs a GPU)
    python train.py -m process=ddpm,vpsde             # a sweep: one run folder per job
    python train.py resume=true hydra.run.dir=runs/<run>    # continue a stopped run
    python train.py distill=consistency distill.teacher=runs/<run>   # a 1-4 step student (or distill=reflow)
    torchrun --nproc_per_node=4 train.py ...          # data-parallel (gloo on CPU, NCCL on CUDA)

Configuration: configs/train.yaml and its groups, type-checked against diffusion/config.py. A bad value or an
unknown key is one line on stderr (exit code 2); HYDRA_FULL_ERROR=1 shows the full traceback instead.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("train")


def run(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from diffusion.distillation.setup import prepare_distillation
    from diffusion.evaluation.periodic import training_evaluations
    from diffusion.runlock import hold_for_job
    from diffusion.runs.resume import resume_run
    from diffusion.training import distributed as D
    from diffusion.training.loop import Trainer
    from diffusion.training.setup import align_model_with_data, check_config, describe_run, final_report, relative
    from diffusion.utils import write_text

    check_config(cfg)
    hydra_cfg = HydraConfig.get()
    run_dir, state = Path(hydra_cfg.runtime.output_dir), None
    hold_for_job(run_dir, "train.py", fix=f"pass another hydra.run.dir than {relative(run_dir)}")  # one writer
    if cfg.resume:  # the checkpoint's config (allowlisted, checked against its weights) + trainer/sampler overrides
        cfg, state = resume_run(run_dir, cfg, list(hydra_cfg.overrides.task))
    # a student of a trained run (configs/distill/): the teacher's configs, its loss, data and first weights
    cfg, student = prepare_distillation(cfg, run_dir, resuming=state is not None) if cfg.distill else (cfg, {})
    dataset = instantiate(cfg.data)
    align_model_with_data(cfg, dataset)
    # sample grids, bits/dim, FID: what the trainer.*_every settings switch on (the grids' sampler is checked here)
    trainer = Trainer(cfg, run_dir, student.pop("dataset", dataset), resume=state,
                      evaluations=training_evaluations(cfg, dataset), **student)
    if D.current().is_main:  # the resolved config (loss, prediction, precision), as every checkpoint saves it
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(trainer.cfg, resolve=True))
        log.info(describe_run(trainer, run_dir))
    summary = trainer.fit()
    if D.current().is_main:
        print(final_report(summary, trainer.cfg, relative(run_dir)), flush=True)
    return summary


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def hydra_main(cfg: DictConfig) -> None:
    from diffusion.cli import guarded

    guarded(run, cfg)


def main() -> int:
    from diffusion.cli import run_main
    from diffusion.training import distributed as D

    try:
        return run_main("train.py", lambda: D.launch(hydra_main))  # under torchrun: every rank, one run folder
    finally:
        D.cleanup()


if __name__ == "__main__":
    sys.exit(main())
