#!/usr/bin/env python
"""Train a diffusion model.

    python train.py                                   # unet_mnist, DDPM, 5,000 bundled MNIST digits
    python train.py process=vpsde loss=dsm trainer.max_steps=5000
    python train.py experiment=ddpm_cifar10           # Ho et al. 2020's CIFAR-10 recipe (needs a GPU)
    python train.py -m process=ddpm,vpsde             # a sweep: one run folder per job
    python train.py resume=true hydra.run.dir=runs/<run>    # continue a stopped run
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

    from diffusion import config as schema
    from diffusion.device import describe_machine
    from diffusion.runs import config_from_checkpoint
    from diffusion.training import distributed as D
    from diffusion.training.build import check_weights_fit
    from diffusion.training.checkpoint import load_checkpoint, require_checkpoints
    from diffusion.training.loop import Trainer
    from diffusion.training.setup import (align_model_with_data, final_report, holdout_batch, relative,
                                          resume_config)
    from diffusion.runlock import hold_for_job
    from diffusion.utils import write_text

    # "+trainer.x=1" is added past the schema's struct flag: check the composed config once more
    OmegaConf.merge(OmegaConf.structured(schema.TrainConfig), OmegaConf.to_container(cfg))
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    hold_for_job(run_dir, "train.py", fix=f"pass another hydra.run.dir than {relative(run_dir)}")  # one writer
    state = None
    if cfg.resume:
        state = load_checkpoint(require_checkpoints(run_dir))
        saved = config_from_checkpoint(state, trust=cfg.trust_checkpoint_config)
        cfg = resume_config(saved, cfg, list(hydra_cfg.overrides.task))
        check_weights_fit(cfg, state)  # the config's network against the weights, on the meta device
        log.info(f"resuming {state['path']} at step {state['step']}")
    dataset = instantiate(cfg.data)
    align_model_with_data(cfg, dataset)
    holdout = holdout_batch(cfg, dataset) if cfg.trainer.bpd_every > 0 else None
    trainer = Trainer(cfg, run_dir, dataset, resume=state, holdout=holdout)
    main_rank = D.current().is_main
    if main_rank:
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        log.info(f"run folder {run_dir}: {trainer.micro_batch} images x {trainer.accum} accumulation x "
                 f"{D.current().world_size} processes per step on {trainer.device} ({describe_machine(trainer.device)}), "
                 f"precision {trainer.precision}")
    summary = trainer.fit()
    if main_rank:
        # trainer.fit_budget may have lowered max_steps to fit the time budget
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        print(final_report(summary, cfg, relative(run_dir)), flush=True)
    return summary


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def hydra_main(cfg: DictConfig) -> None:
    from diffusion.cli import guarded

    guarded(run, cfg)


def main() -> int:
    from diffusion import config as schema
    from diffusion.cli import run_main
    from diffusion.training import distributed as D

    def distributed_main() -> None:
        info = D.init_distributed()
        if info.distributed:
            # one run folder for all ranks: everyone names it with rank 0's time stamp
            schema.set_run_stamp(D.broadcast_object(schema.run_stamp()))
            if not info.is_main:
                sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
        hydra_main()

    try:
        return run_main("train.py", distributed_main)
    finally:
        D.cleanup()


if __name__ == "__main__":
    sys.exit(main())
