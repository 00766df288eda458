"""``sample.py task=inpaint`` and ``sample.py task=interpolate``: the checkpoint's model conditioned on images.

    python sample.py ckpt=runs/<run> task=inpaint images=test mask=center n=8
    python sample.py ckpt=runs/<run> task=inpaint images=my.npz mask=random:0.5 inpaint.method=repaint sampler=ddpm
    python sample.py ckpt=runs/<run> task=interpolate images=pngs/ interpolate.pair=[3,7] interpolate.frames=10

images: an ``.npz`` (``arr_0`` uint8 N x H x W x C, as sample.py writes), a folder of image files, or ``test`` /
``train`` (the run's own data split). task=inpaint writes ``inpaint.png`` (for each block of up to 16 images three
rows: inputs, the known pixels with the missing ones grey, completions) and ``inpaint.npz`` (``arr_0`` the
completions, ``inputs``, ``masks``, all uint8 NHWC; masks 255 where known); task=interpolate writes
``interpolate.png`` (a strip: image a, the decoded frames, image b) and ``interpolate.npz``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusion.conditioning.inpaint import inpaint
from diffusion.conditioning.interpolate import interpolate
from diffusion.conditioning.masks import build_mask
from diffusion.device import pick_device
from diffusion.errors import EvaluationError
from diffusion.fitting import resolve_sampler
from diffusion.runs import build_data, load_run
from diffusion.runs.store import nchw_to_nhwc, save_uint8_grid, to_uint8
from diffusion.samplers import sampler_from_config
from diffusion.utils import write_atomic


def run_task(cfg: DictConfig) -> dict:
    task = cfg.task.value
    spec = sampler_from_config(cfg.sampler) if task == "inpaint" else None
    device = pick_device(cfg.device)
    trained = load_run(cfg.ckpt, cfg.ema, device, cfg.trust_checkpoint_config)
    if spec is not None:  # a schedule file is read; a grid fitted to the run is sample.py's alone (one line)
        spec = resolve_sampler(spec, trained.process, fit=False)
    shape, note = trained.shape()
    if note:
        print(f"note: {note}", file=sys.stderr)
    if trained.num_classes is not None:
        raise EvaluationError(f"task={task} needs an unconditional model; this checkpoint is class-conditional")
    images = load_images(cfg.images, trained.cfg, tuple(shape))
    out = Path(cfg.out) if cfg.out else trained.run_dir / task
    if task == "inpaint":
        return _inpaint(cfg, spec, trained.process, trained.model, images, device, out, trained.path)
    return _interpolate(cfg, trained.process, trained.model, images, device, out, trained.path)


def load_images(source: str, train_cfg: DictConfig, shape: tuple[int, int, int]) -> Tensor:
    """uint8 images (N, C, H, W) from an npz, a folder or the run's ``test`` / ``train`` split, checked against
    the model's (C, H, W)."""
    from diffusion.evaluation.quality import dataset_images
    from diffusion.runs.store import load_images as load_files

    if source in ("test", "train"):
        images = dataset_images(build_data(train_cfg.data, source))
    else:
        if not Path(source).exists():
            raise EvaluationError(f"no images at {source}: pass images=<file.npz>, <folder> or test / train")
        images, _ = load_files(source)
    if tuple(images.shape[1:]) != shape:
        c, h, w = images.shape[1:]
        raise EvaluationError(f"images={source} are {c}x{h}x{w} (channels x height x width) but the model makes "
                                  f"{'x'.join(map(str, shape))}: convert them to that size and channel count")
    return images


def _inpaint(cfg, spec, process, model, images, device, out: Path, path) -> dict:
    name, steps, options = spec.name, spec.steps, spec.options
    n = min(int(cfg.n), len(images))
    images = images[:n]
    c, h, w = images.shape[1:]
    g = torch.Generator().manual_seed(int(cfg.seed))
    known = build_mask(cfg.mask, n, h, w, g).expand(n, c, h, w)
    method = cfg.inpaint.method
    extra = dict(jump_length=int(cfg.inpaint.jump_length), resamples=int(cfg.inpaint.resamples)) if method == "repaint" else {}
    print(f"inpainting {n} images ({c}x{h}x{w}, mask={cfg.mask}) from {path} ({process!r}) with {method}, "
          f"{name}, {steps} steps{' ' + str(extra) if extra else ''} on {device}")
    done = []
    for i in range(0, n, int(cfg.batch_size)):
        x = images[i: i + int(cfg.batch_size)].to(device).float() / 127.5 - 1
        done.append(inpaint(process, model, x, known[i: i + len(x)].to(device), sampler=name, steps=steps,
                            method=method, generator=g, clip_denoised=cfg.clip_denoised, sampler_options=options,
                            **extra).cpu())
    completions = to_uint8(torch.cat(done))
    shown = torch.where(known, images, torch.full_like(images, 128))
    cols = min(n, 16)
    pad = (-n) % cols  # fill the last block's rows with white
    padded = [torch.cat([t, torch.full((pad, c, h, w), 255, dtype=torch.uint8)]) for t in (images, shown, completions)]
    blocks = [torch.cat([t[j: j + cols] for t in padded]) for j in range(0, n + pad, cols)]
    grid = save_uint8_grid(torch.cat(blocks), out / "inpaint.png", nrow=cols)
    masks = (known.to(torch.uint8) * 255)
    npz = out / "inpaint.npz"
    write_atomic(npz, lambda f: np.savez(f, arr_0=nchw_to_nhwc(completions), inputs=nchw_to_nhwc(images),
                                         masks=nchw_to_nhwc(masks)))
    print(f"wrote {grid} and {npz}")
    return {"png": grid, "npz": npz, "completions": completions, "known": known}


def _interpolate(cfg, process, model, images, device, out: Path, path) -> dict:
    pair = [int(i) for i in cfg.interpolate.pair]
    if len(pair) != 2 or not all(0 <= i < len(images) for i in pair):
        raise EvaluationError(f"interpolate.pair={pair}: give two indices into the {len(images)} images")
    a, b = (images[i].to(device).float() / 127.5 - 1 for i in pair)
    ic = cfg.interpolate
    print(f"interpolating images {pair[0]} and {pair[1]} through the ODE latents of {path} ({process!r}), "
          f"{int(ic.frames)} frames on {device}")
    frames = interpolate(process, model, a, b, frames=int(ic.frames), rtol=float(ic.rtol), atol=float(ic.atol))
    strip = torch.cat([images[pair[0]][None], to_uint8(frames.cpu()), images[pair[1]][None]])
    png = save_uint8_grid(strip, out / "interpolate.png", nrow=len(strip))
    npz = out / "interpolate.npz"
    write_atomic(npz, lambda f: np.savez(f, arr_0=nchw_to_nhwc(strip)))
    print(f"wrote {png} and {npz}")
    return {"png": png, "npz": npz, "strip": strip}


__all__ = ["run_task", "load_images"]
