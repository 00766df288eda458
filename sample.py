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
from omegaconf import DictConfig, OmegaConf


def run(cfg: DictConfig) -> dict:
    if cfg.task.value != "sample":  # inpaint, interpolate
        from diffusion.conditioning.cli import run_task

        return run_task(cfg)
    from diffusion.device import pick_device
    from diffusion.evaluation.schedule import fitted_schedule
    from diffusion.likelihood.analytic import sampler_gamma
    from diffusion.runs import BatchStore, check_request, generate, load_run, save_grid
    from diffusion.samplers import sampler_from_config
    from diffusion.errors import ConfigError
    from diffusion.samplers.common import FITTED

    spec = sampler_from_config(cfg.sampler)
    device = pick_device(cfg.device)
    trained = load_run(cfg.ckpt, cfg.ema, device, cfg.trust_checkpoint_config)
    labels = OmegaConf.to_container(cfg.class_labels) if OmegaConf.is_config(cfg.class_labels) else cfg.class_labels
    check_request(int(cfg.n), int(cfg.batch_size), trained.num_classes, labels, cfg.guidance_scale)  # before any output
    spec = spec.replace(**sampler_gamma(spec.options, trained.run_dir, cfg.ema))  # variance=analytic: the run's Gamma
    spec.check(trained.process)
    shape, note = trained.shape()
    if note:
        print(f"note: {note}", file=sys.stderr)
    if spec.options.get("coefficients") == FITTED and spec.options.get("timesteps") != FITTED:
        raise ConfigError("sampler.coefficients=fitted are fitted together with their grid: set "
                          "sampler.timesteps=fitted too (or pass a schedule file to both)")
    if spec.options.get("timesteps") == FITTED:  # the run's grid for this sampler and NFE, fitted on first use
        schedule = str(fitted_schedule(
            trained.process, trained.model, shape, spec.name, spec.steps, spec.options,
            trained.run_dir / "eval" / "schedules", refine=cfg.schedule.refine,
            fine_steps=int(cfg.schedule.fine_steps), n=int(cfg.schedule.n), device=device,
            log=lambda m: print(m, file=sys.stderr),
            meta=trained.weights))
        weights = {"coefficients": schedule} if spec.options.get("coefficients") == FITTED else {}
        spec = spec.replace(timesteps=schedule, **weights)
    batch_size = min(int(cfg.batch_size), int(cfg.n))
    raw = "" if cfg.ema else "_raw"
    out = cfg.out or str(trained.run_dir / "samples" / f"{spec.label}_seed{cfg.seed}{raw}")
    manifest = {"checkpoint": str(trained.path.resolve()), "ema": cfg.ema, "sampler": spec.name, "steps": spec.steps,
                "options": spec.options, "seed": cfg.seed, "batch_size": batch_size, "shape": list(shape),
                "class_labels": labels, "guidance_scale": cfg.guidance_scale, "clip_denoised": cfg.clip_denoised}
    store = BatchStore(out, manifest).open()
    print(f"{cfg.n} samples of {'x'.join(map(str, shape))} from {trained.path} ({'EMA' if cfg.ema else 'raw'} weights, "
          f"{trained.process!r}) with {spec.name}, {spec.steps} steps{' ' + str(spec.options) if spec.options else ''} "
          f"on {device}")
    _, _, stats = generate(trained.process, trained.model, int(cfg.n), shape, sampler=spec, seed=int(cfg.seed),
                           batch_size=batch_size, num_classes=trained.num_classes, class_labels=labels,
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
