"""``sample.py task=sample`` (``configs/sample.yaml``, typed by ``config.SampleConfig``): ``n`` samples of a trained
run with the configured sampler, streamed in resumable batches into ``<out>/`` (samples.npz, grid.png,
manifest.json). The other tasks of ``sample.py`` (inpaint, interpolate) live in ``diffusion/conditioning/cli.py``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from diffusion.device import pick_device
from diffusion.fitting import resolve_sampler
from diffusion.likelihood.analytic import sampler_gamma
from diffusion.runlock import hold
from diffusion.runs import BatchStore, check_request, generate, load_run
from diffusion.runs.store import save_uint8_grid
from diffusion.samplers import sampler_from_config


def sample(cfg: DictConfig) -> dict:
    """``sample.py``'s default task; returns {npz, grid, stats, labels}."""
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
    # timesteps=fitted: the run's grid for this sampler and NFE, fitted with cfg.schedule.* on first use and kept in
    # <run>/eval/schedules/ (coefficients=fitted too); a schedule file: its values
    spec = resolve_sampler(spec, trained.process, trained.model, shape,
                           schedules_dir=trained.run_dir / "eval" / "schedules", refine=cfg.schedule.refine,
                           fine_steps=int(cfg.schedule.fine_steps), n=int(cfg.schedule.n), device=device,
                           meta=trained.provenance, log=lambda m: print(m, file=sys.stderr))
    batch_size = min(int(cfg.batch_size), int(cfg.n))
    raw = "" if cfg.ema else "_raw"
    out = cfg.out or str(trained.run_dir / "samples" / f"{spec.label}_seed{cfg.seed}{raw}")
    options = {**spec.options, **spec.sources}  # a value read from a file is recorded as the file
    manifest = {"checkpoint": str(trained.path.resolve()), "ema": cfg.ema, "sampler": spec.name, "steps": spec.steps,
                "options": options, "seed": cfg.seed, "batch_size": batch_size, "shape": list(shape),
                "class_labels": labels, "guidance_scale": cfg.guidance_scale, "clip_denoised": cfg.clip_denoised}
    hold(out, "sample.py", fix="pass another out=<folder>")  # one writer per output folder (diffusion.runlock)
    store = BatchStore(out, manifest).open()
    print(f"{cfg.n} samples of {'x'.join(map(str, shape))} from {trained.path} ({'EMA' if cfg.ema else 'raw'} weights, "
          f"{trained.process!r}) with {spec.name}, {spec.steps} steps{' ' + str(options) if options else ''} "
          f"on {device}")
    _, _, stats = generate(trained.process, trained.model, int(cfg.n), shape, sampler=spec, seed=int(cfg.seed),
                           batch_size=batch_size, num_classes=trained.num_classes, class_labels=labels,
                           guidance_scale=cfg.guidance_scale, device=device, store=store, progress=cfg.progress,
                           clip_denoised=cfg.clip_denoised)
    num_batches = -(-int(cfg.n) // batch_size)
    npz, images, labels = store.gather(num_batches)
    grid: Path | None = save_uint8_grid(images[: cfg.grid], store.out_dir / "grid.png") if cfg.grid > 0 else None
    if stats.batches_run:
        print(f"NFE {stats.nfe:.0f} per sample | {stats.seconds:.2f} s | {stats.images_per_second:.2f} images/s"
              + (f" | {stats.batches_skipped} of {num_batches} batches resumed from disk" if stats.batches_skipped else ""))
    else:
        print(f"all {num_batches} batches were already in {store.batch_dir}: nothing to sample")
    print(f"wrote {npz}" + (f" and {grid}" if grid else ""))
    return {"npz": npz, "grid": grid, "stats": stats.as_dict(), "labels": labels}
