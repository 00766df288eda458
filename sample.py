#!/usr/bin/env python
"""Draw samples from a trained model.

    python sample.py ckpt=runs/<run>                                  # 64 samples, DDIM 50 steps, EMA weights
    python sample.py ckpt=runs/<run> sampler=dpmpp_2m sampler.steps=20 n=16 seed=1 out=samples/dpm
    python sample.py ckpt=runs/<run> sampler=fewstep sampler.steps=5  # recommended for 5-20 NFE: UniPC-3 on a
                     # time grid fitted to the run (GITS + refinement) on first use, kept in <run>/eval/schedules/
    python sample.py ckpt=runs/<run> sampler=ode sampler.rtol=1e-4 sampler.atol=1e-4
    python sample.py ckpt=runs/<run> sampler=pc sampler.snr=0.16      # predictor-corrector
    python sample.py ckpt=runs/<run> n=50000 batch_size=500           # for FID: streams batches, resumable
    python sample.py ckpt=runs/<run> class_labels=[3] guidance_scale=2.0   # class-conditional models
    python sample.py ckpt=runs/<run> task=inpaint images=test mask=center inpaint.method=repaint n=8
    python sample.py ckpt=runs/<run> task=interpolate images=test interpolate.pair=[0,1] interpolate.frames=8

Writes <out>/samples.npz (arr_0: uint8 images N x H x W x C; arr_1: labels of conditional models),
<out>/grid.png and <out>/manifest.json; batches stream to <out>/batches/ and a rerun of the same command
skips the finished ones. Configuration: configs/sample.yaml (+ configs/sampler/<name>.yaml). A bad request
(unknown key, a sampler the process cannot run, a missing or damaged checkpoint) is one line on stderr, exit 2.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig


def run(cfg: DictConfig) -> dict:
    """task=sample: diffusion/evaluation/sample_task.py; inpaint, interpolate: diffusion/conditioning/cli.py."""
    if cfg.task.value != "sample":
        from diffusion.conditioning.cli import run_task

        return run_task(cfg)
    from diffusion.evaluation.sample_task import sample

    return sample(cfg)


@hydra.main(version_base="1.3", config_path="configs", config_name="sample")
def hydra_main(cfg: DictConfig) -> None:
    from diffusion.cli import guarded

    guarded(run, cfg)


def main() -> int:
    from diffusion.cli import run_main

    return run_main("sample.py", hydra_main, interrupted="interrupted (finished batches are kept; rerun the same "
                                                         "command to resume)")


if __name__ == "__main__":
    sys.exit(main())
