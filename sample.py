#!/usr/bin/env python
"""Draw samples from a trained model.

    python sample.py ckpt=runs/<run>                                  # 64 samples, DDIM 50 steps, EMA weights
    python sample.py ckpt=runs/<run> sampler=dpmpp_2m sampler.steps=20 n=16 seed=1 out=samples/dpm
    python sample.py ckpt=runs/<run> sampler=ode sampler.rtol=1e-4 sampler.atol=1e-4
    python sample.py ckpt=runs/<run> sampler=pc sampler.snr=0.16      # predictor-corrector
    python sample.py ckpt=runs/<run> n=50000 batch_size=500           # for FID: streams batches, resumable
    python sample.py ckpt=runs/<run> class_labels=[3] guidance_scale=2.0   # class-conditional models

Writes <out>/samples.npz (arr_0: uint8 images N x H x W x C; arr_1: labels of conditional models),
<out>/grid.png and <out>/manifest.json; batches stream to <out>/batches/ and a rerun of the same command
skips the finished ones. Configuration: configs/sample.yaml (+ configs/sampler/<name>.yaml). A bad request
(unknown key, a sampler the process cannot run, a missing or damaged checkpoint) is one line on stderr, exit 2.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf


def run(cfg: DictConfig) -> dict:
    from diffusion.evaluation import cli
    from diffusion.evaluation.generate import class_labels_for, generate
    from diffusion.evaluation.io import BatchStore, save_grid
    from diffusion.evaluation.sweep import check_samplers
    from diffusion.samplers import sampler_options

    sampler_cfg = OmegaConf.to_container(cfg.sampler, resolve=True)
    name, steps = str(sampler_cfg.pop("name")), int(sampler_cfg.pop("steps"))
    options = {k: v for k, v in sampler_cfg.items() if k != "_target_"}
    unknown = sorted(set(options) - set(sampler_options(name))) if name in _samplers() else []
    if unknown:
        raise cli.EvaluationError(f"unknown option(s) {', '.join(unknown)} for sampler {name!r}; "
                                  f"valid: {', '.join(sampler_options(name)) or 'none'}")
    device = cli.pick_device(cfg.device)
    model, process, train_cfg, path = cli.load_trained(cfg.ckpt, cfg.ema, device)
    check_samplers(process, [name], key="sampler")
    from diffusion.likelihood.analytic import sampler_gamma

    options = sampler_gamma(options, cli.run_dir_of(path), cfg.ema)  # variance=analytic: the run's stored Gamma
    shape, note = cli.sample_shape(train_cfg)
    if note:
        print(f"note: {note}", file=sys.stderr)
    num_classes = cli.num_classes_of(model, train_cfg)
    class_labels = OmegaConf.to_container(cfg.class_labels) if OmegaConf.is_config(cfg.class_labels) else cfg.class_labels
    class_labels_for(1, num_classes, class_labels)  # bad labels fail here, before anything is written
    if cfg.guidance_scale is not None and num_classes is None:
        raise cli.EvaluationError("guidance_scale needs a class-conditional model: this checkpoint's model is unconditional")
    batch_size = min(int(cfg.batch_size), int(cfg.n))
    out = cfg.out or str(cli.run_dir_of(path) / "samples" / f"{name}_{steps}_seed{cfg.seed}{'' if cfg.ema else '_raw'}")
    manifest = {"checkpoint": str(path.resolve()), "ema": cfg.ema, "sampler": name, "steps": steps, "options": options,
                "seed": cfg.seed, "batch_size": batch_size, "shape": list(shape), "class_labels": class_labels,
                "guidance_scale": cfg.guidance_scale, "clip_denoised": cfg.clip_denoised}
    store = BatchStore(out, manifest).open()
    print(f"{cfg.n} samples of {'x'.join(map(str, shape))} from {path} ({'EMA' if cfg.ema else 'raw'} weights, "
          f"{process!r}) with {name}, {steps} steps{' ' + str(options) if options else ''} on {device}")
    _, _, stats = generate(process, model, int(cfg.n), shape, sampler=name, steps=steps, seed=int(cfg.seed),
                           batch_size=batch_size, options=options, num_classes=num_classes, class_labels=class_labels,
                           guidance_scale=cfg.guidance_scale, device=device, store=store, progress=cfg.progress,
                           clip_denoised=cfg.clip_denoised)
    num_batches = -(-int(cfg.n) // batch_size)
    npz, images, labels = store.gather(num_batches)
    grid = save_grid(images[: cfg.grid], store.out_dir / "grid.png") if cfg.grid > 0 else None
    if stats.batches_run:
        print(f"NFE {stats.nfe:.0f} per sample | {stats.seconds:.2f} s | {stats.images_per_second:.2f} images/s"
              + (f" | {stats.batches_skipped} of {num_batches} batches resumed from disk" if stats.batches_skipped else ""))
    else:
        print(f"all {num_batches} batches were already in {store.batch_dir}: nothing to sample")
    print(f"wrote {npz}" + (f" and {grid}" if grid else ""))
    return {"npz": npz, "grid": grid, "stats": stats.as_dict(), "labels": labels}


def _samplers():
    from diffusion.samplers import SAMPLERS

    return SAMPLERS


@hydra.main(version_base="1.3", config_path="configs", config_name="sample")
def hydra_main(cfg: DictConfig) -> None:
    from diffusion.evaluation.cli import guarded

    guarded(run, cfg)


def main() -> int:
    from diffusion.evaluation.cli import run_main

    return run_main("sample.py", hydra_main)


if __name__ == "__main__":
    sys.exit(main())
