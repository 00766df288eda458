"""What train.py does around the loop: a resumed run's config, the network fitted to the data, the held-out batch,
the first log line and the final report."""
from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, OmegaConf

from diffusion import config as schema
from diffusion.errors import ConfigError

log = logging.getLogger("train")

# a resumed run keeps these from its checkpoint; only trainer.* and sampler.* may change on resume
FIXED_ON_RESUME = ("model", "process", "data", "loss", "prediction")
# the command line's word, never the checkpoint's: they describe this invocation, not the run
_INVOCATION = ("resume", "trust_checkpoint_config")


def resume_config(saved: DictConfig, composed: DictConfig, overrides: list[str]) -> DictConfig:
    """The config of a resumed run: the checkpoint's, with this command's trainer.* / sampler.* overrides.

    An override that would change the model, process, data, loss or prediction of the run is an error.
    """
    cfg = OmegaConf.merge(OmegaConf.structured(schema.TrainConfig), saved)
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        top = key.split(".")[0].split("/")[0]
        if top in _INVOCATION or top.startswith("hydra"):
            continue
        if top in ("trainer", "sampler"):
            if "." in key:
                OmegaConf.update(cfg, key, OmegaConf.select(composed, key), merge=False)
            else:
                keep = cfg.trainer.precision if top == "trainer" else None
                cfg[top] = composed[top]
                if keep is not None and str(composed.trainer.precision).endswith("auto"):
                    cfg.trainer.precision = keep
            continue
        for node in FIXED_ON_RESUME if top == "experiment" else (top,):
            if _plain(composed.get(node)) != _plain(cfg.get(node)):
                raise ConfigError(f"resume=true: '{override}' changes {node} of the run (saved in its checkpoint); "
                                  "a resumed run keeps its model, process, data, loss and prediction: drop that override")
    for key in _INVOCATION:
        cfg[key] = composed[key]
    cfg.resume = True
    return cfg


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def align_model_with_data(cfg: DictConfig, dataset) -> None:
    """Give the network the data set's channel count; note a differing image size (any size whose
    sides divide by 2^(levels-1) runs; the config's size only places the attention layers)."""
    model = cfg.model
    if "in_channels" in model and model.in_channels != dataset.channels:
        log.info(f"model.in_channels={model.in_channels} -> {dataset.channels} (the data set's channels)")
        model.in_channels = int(dataset.channels)
    if "image_size" in model and model.image_size != dataset.image_size:
        log.warning(f"model.image_size={model.image_size} but the data set's images are {dataset.image_size}px")


def holdout_batch(cfg: DictConfig, dataset) -> torch.Tensor:
    """The first trainer.bpd_count test images as uint8 (training images if the data set has no test split)."""
    from hydra.utils import instantiate

    source, raw = dataset, False
    if "split" in cfg.data:
        extra = {key: value for key, value in (("flip", False), ("as_uint8", True)) if key in cfg.data}
        source, raw = instantiate(cfg.data, split="test", **extra), "as_uint8" in cfg.data
    n = min(int(cfg.trainer.bpd_count), len(source))
    images = torch.stack([torch.as_tensor(source[i][0]) for i in range(n)])
    # back to the 8-bit values the bound is defined on: x = u / 127.5 - 1
    return images if raw else ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


__all__ = ["check_config", "resume_config", "align_model_with_data", "holdout_batch", "describe_run", "final_report",
           "relative", "FIXED_ON_RESUME"]


def check_config(cfg: DictConfig) -> None:
    """The composed config against the schema once more: "+trainer.x=1" is added past its struct flag."""
    OmegaConf.merge(OmegaConf.structured(schema.TrainConfig), OmegaConf.to_container(cfg))


def describe_run(trainer, run_dir) -> str:
    """What train.py says first: where the run goes, how a step splits over processes, the machine, the precision."""
    from diffusion.device import describe_machine

    world = trainer.dist.world_size
    return (f"run folder {run_dir}: {trainer.micro_batch} images x {trainer.accum} accumulation x {world} processes "
            f"per step on {trainer.device} ({describe_machine(trainer.device)}), precision {trainer.precision}")


def final_report(summary: dict, cfg: DictConfig, where: str) -> str:
    """What train.py prints at the end: why it stopped, and the commands that continue from the run folder."""
    lines = []
    if summary["world_size"] > 1:
        agree = "identical" if summary["replicas_in_sync"] else "DIFFERENT"
        lines.append(f"DDP: {summary['world_size']} processes finished at step {summary['step']}; weights {agree} on all ranks")
    stopped_by, saved = summary["stopped_by"], relative(summary["checkpoint"])
    if stopped_by == "time":
        lines.append(f"Time budget trainer.max_minutes={cfg.trainer.max_minutes} used up at step {summary['step']} of "
                     f"{summary.get('max_steps', cfg.trainer.max_steps)}; saved {saved}. Train on with:\n"
                     f"  python train.py resume=true hydra.run.dir={where}")
    elif stopped_by == "signal":
        lines.append(f"Stopped ({summary['signal']}) at step {summary['step']} and saved {saved}. "
                     f"Continue with:\n  python train.py resume=true hydra.run.dir={where}")
    # a consistency student samples with its own sampler and has no ODE likelihood (evaluation/tasks.py says why)
    from diffusion.training.build import is_consistency_student

    student = is_consistency_student(cfg)
    likelihood = ("none (a consistency model defines no probability-flow ODE; evaluate its teacher)" if student
                  else f"python evaluate.py ckpt={where} task=likelihood")
    lines.append(f"\nRun folder:  {where}\n"
                 f"Sample:      python sample.py ckpt={where} sampler={'consistency' if student else 'dpmpp_2m'}\n"
                 f"Likelihood:  {likelihood}\n"
                 f"TensorBoard: tensorboard --logdir {where}/tb")
    return "\n".join(lines)


def relative(path) -> str:
    """``path`` relative to the working directory where it lies below it, else as given."""
    import os

    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)
