#!/usr/bin/env python
"""Train a diffusion model.

    python train.py                                   # unet_mnist, DDPM, 5,000 bundled MNIST digits, CPU ~11 min
    python train.py process=vpsde loss=dsm trainer.max_steps=5000
    python train.py experiment=ddpm_cifar10           # Ho et al. 2020's CIFAR-10 recipe (needs a GPU)
    python train.py -m process=ddpm,vpsde             # a sweep: one run folder per job
    python train.py resume=true hydra.run.dir=runs/<run>    # continue a stopped run
    torchrun --nproc_per_node=4 train.py ...          # data-parallel (gloo on CPU, NCCL on CUDA)

Configuration: configs/train.yaml and its groups (model, process, sampler, data, loss, trainer,
experiment), type-checked against diffusion/config.py. A bad value or unknown key is reported in one
line (exit code 2); HYDRA_FULL_ERROR=1 shows the full traceback instead.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from diffusion import config as schema
from diffusion.training import distributed as D
from diffusion.training.errors import ConfigError

log = logging.getLogger("train")

# a resumed run keeps these from its checkpoint; only trainer.* and sampler.* may change on resume
_FIXED_ON_RESUME = ("model", "process", "data", "loss", "prediction")


def _relative(path: Path) -> str:
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)


def resume_config(saved: DictConfig, composed: DictConfig, overrides: list[str]) -> DictConfig:
    """The config of a resumed run: the checkpoint's, with this command's trainer.* / sampler.* overrides.

    An override that would change the model, process, data, loss or prediction of the run is an error.
    """
    cfg = OmegaConf.merge(OmegaConf.structured(schema.TrainConfig), saved)
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        top = key.split(".")[0].split("/")[0]
        if top == "resume" or top.startswith("hydra"):
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
        for node in _FIXED_ON_RESUME if top == "experiment" else (top,):
            if _plain(composed.get(node)) != _plain(cfg.get(node)):
                raise ConfigError(f"resume=true: '{override}' changes {node} of the run (saved in its checkpoint); "
                                  "a resumed run keeps its model, process, data, loss and prediction: drop that override")
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


def holdout_batch(cfg: DictConfig, dataset):
    """The first trainer.bpd_count test images as uint8 (training images if the data set has no test split)."""
    import torch
    from hydra.utils import instantiate

    source, raw = dataset, False
    if "split" in cfg.data:
        extra = {key: value for key, value in (("flip", False), ("as_uint8", True)) if key in cfg.data}
        source, raw = instantiate(cfg.data, split="test", **extra), "as_uint8" in cfg.data
    n = min(int(cfg.trainer.bpd_count), len(source))
    images = torch.stack([torch.as_tensor(source[i][0]) for i in range(n)])
    # back to the 8-bit values the bound is defined on: x = u / 127.5 - 1
    return images if raw else ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def run(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from diffusion.training.build import config_from_checkpoint
    from diffusion.training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
    from diffusion.training.loop import Trainer

    # "+trainer.x=1" is added past the schema's struct flag: check the composed config once more
    OmegaConf.merge(OmegaConf.structured(schema.TrainConfig), OmegaConf.to_container(cfg))
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    info = D.current()
    state = None
    if cfg.resume:
        if not list_checkpoints(run_dir):
            raise CheckpointError(f"resume=true but {run_dir} has no checkpoints: pass hydra.run.dir=<the run folder to continue>")
        state = load_checkpoint(run_dir)
        cfg = resume_config(config_from_checkpoint(state), cfg, list(hc.overrides.task))
        log.info(f"resuming {state['path']} at step {state['step']}")
    dataset = instantiate(cfg.data)
    align_model_with_data(cfg, dataset)
    holdout = holdout_batch(cfg, dataset) if cfg.trainer.bpd_every > 0 else None
    trainer = Trainer(cfg, run_dir, dataset, resume=state, holdout=holdout)
    if info.is_main:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        log.info(f"run folder {run_dir}: {trainer.micro_batch} images x {trainer.accum} accumulation x "
                 f"{info.world_size} processes per step on {trainer.device}, precision {trainer.precision}")
    summary = trainer.fit()
    if info.is_main:
        where = _relative(run_dir)
        if summary["world_size"] > 1:
            agree = "identical" if summary["replicas_in_sync"] else "DIFFERENT"
            print(f"DDP: {summary['world_size']} processes finished at step {summary['step']}; weights {agree} on all ranks")
        stopped_by = summary["stopped_by"]
        if stopped_by == "time":
            print(f"Time budget trainer.max_minutes={cfg.trainer.max_minutes} used up at step {summary['step']} of "
                  f"{cfg.trainer.max_steps}; saved {_relative(summary['checkpoint'])}. Train on with:\n"
                  f"  python train.py resume=true hydra.run.dir={where}")
        elif stopped_by == "signal":
            print(f"Stopped ({summary['signal']}) at step {summary['step']} and saved "
                  f"{_relative(summary['checkpoint'])}. Continue with:\n"
                  f"  python train.py resume=true hydra.run.dir={where}")
        print(f"\nRun folder:  {where}\n"
              f"Sample:      python sample.py ckpt={where} sampler=ddim_stochastic\n"
              f"Likelihood:  python evaluate.py ckpt={where} task=likelihood\n"
              f"TensorBoard: tensorboard --logdir {where}/tb", flush=True)
    return summary


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def hydra_main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except _user_errors() as error:  # here, not in main(): Hydra would first add a line naming the job
        _report(error)


_NOISE = ("reference_type", "object_type", "To append to your config", "Config search path", "provider=")


def _one_line(error: BaseException) -> str:
    from hydra.errors import InstantiationException, MissingConfigException

    cause = error.__cause__
    if isinstance(error, InstantiationException) and isinstance(cause, _user_errors()):
        return _one_line(cause)
    if isinstance(error, MissingConfigException) and error.options:
        options = list(error.options)
        return f"{str(error).splitlines()[0]}; available: {', '.join(options)}"
    parts = [str(error)]
    if cause is not None and str(cause) not in parts[0]:
        parts.append(str(cause))
    lines: list[str] = []
    for line in (ln.strip().rstrip(".") for part in parts for ln in part.splitlines()):
        if not line or line.startswith(_NOISE) or line in lines:
            continue
        if line.startswith("full_key:") and line.split(":", 1)[1].strip() in " ".join(lines):
            continue
        lines.append(line)
    return "; ".join(lines)


def _user_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from diffusion.data import DataError
    from diffusion.training.checkpoint import CheckpointError
    from diffusion.training.errors import TrainingError

    return HydraException, OmegaConfBaseException, DataError, CheckpointError, ConfigError, TrainingError


def _report(error: BaseException) -> None:
    """Print ``error`` as one line and exit with status 2 (HYDRA_FULL_ERROR=1: raise it instead)."""
    if _FULL_ERROR:
        raise error
    print(f"train.py: error: {_one_line(error)}", file=sys.stderr, flush=True)
    raise SystemExit(2)


_FULL_ERROR = os.environ.get("HYDRA_FULL_ERROR") == "1"


def main() -> int:
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises; we print the one line ourselves
    schema.register()
    try:
        info = D.init_distributed()
        if info.distributed:
            # one run folder for all ranks: everyone names it with rank 0's time stamp
            schema.set_run_stamp(D.broadcast_object(schema.run_stamp()))
            if not info.is_main:
                sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
        hydra_main()
    except _user_errors() as error:
        _report(error)
    finally:
        D.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
