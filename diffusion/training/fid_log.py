"""FID and KID during training: every ``trainer.fid_every`` steps (and at the end of the run), ``trainer.fid_count``
samples from the EMA weights with the run's sampler, scored like ``evaluate.py task=fid`` and logged to TensorBoard.

Logged under ``fid/``: ``fid``, ``kid`` (and ``kid_std``) against the train split, and ``fid_floor``/``kid_floor``,
the same scores of real test images at the same n (FID is biased upwards at small n, so the curve means something
only beside its floor). For 28x28 MNIST digits also ``digit_fd``, ``digit_kid`` and their floors (the shipped digit
classifier, against the test split). Without the Inception weights FID is skipped with one warning and the digit
scores are still logged. Off by default (``fid_every: 0``): on a CPU the Inception network costs ~0.3 s an image
(``fid_inception: false`` keeps only the digit scores).
"""
from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

LOGGED = ("fid", "kid", "kid_std", "fid_floor", "kid_floor", "digit_fd", "digit_fd_floor", "digit_kid", "digit_kid_std",
          "digit_kid_floor", "digit_near_copies")


def _quality(trainer):
    """Built once per run (the reference features are cached on disk by content hash)."""
    quality = getattr(trainer, "_fid_quality", None)
    if quality is None:
        from diffusion.runs import build_data
        from diffusion.evaluation.quality import build_quality, dataset_images

        data_cfg = trainer.cfg.data

        def heldout():
            try:
                return dataset_images(build_data(data_cfg, "test"))
            except Exception:  # noqa: BLE001 - a data set without a test split: no floor
                return None

        shape = tuple(trainer._sample_shape(1)[1:])
        quality = build_quality(shape, lambda: dataset_images(build_data(data_cfg, "train")),
                                data_target=data_cfg.get("_target_"), device=trainer.device,
                                fid="auto" if trainer.tcfg.get("fid_inception", True) else False,
                                heldout=heldout, log=log.warning)
        trainer._fid_quality = quality
    return quality


@torch.no_grad()
def log_fid(trainer, step: int, final: bool = False) -> dict[str, Any] | None:
    """At every ``trainer.fid_every``-th step (and at the final step): score ``trainer.fid_count`` EMA samples and
    log them (rank 0 only). Returns the scores, or None when it is not time or nothing can be scored."""
    every = int(trainer.tcfg.get("fid_every", 0) or 0)
    if every <= 0 or not trainer.dist.is_main or not (step % every == 0 or final):
        return None
    from diffusion.runs import generate
    from diffusion.samplers import sampler_from_config

    quality = _quality(trainer)
    if quality.fid is None and quality.digits is None:
        return None
    spec = sampler_from_config(trainer.cfg.sampler)
    n = int(trainer.tcfg.get("fid_count", 1000))
    # the same seeds every time, so the curve shows the model changing, not the noise; the network runs in the
    # training precision as for the sample grids
    with torch.random.fork_rng(devices=[trainer.device] if trainer.device.type == "cuda" else []), trainer._autocast():
        images, _, _ = generate(trainer.process, trainer.ema_model, n, trainer._sample_shape(1)[1:], sampler=spec,
                                seed=int(trainer.tcfg.seed), batch_size=min(n, 256),
                                num_classes=trainer.num_classes, device=trainer.device,
                                clip_denoised=trainer.tcfg.sample_clip)
    scores = quality(images)
    trainer.logger.scalars(step, {f"fid/{k}": float(scores[k]) for k in LOGGED if scores.get(k) is not None})
    shown = ", ".join(f"{k}={scores[k]:.4g}" for k in ("fid", "fid_floor", "digit_fd", "digit_fd_floor")
                      if scores.get(k) is not None)
    log.info(f"step {step}: {shown} ({n} samples, {spec.name} {spec.steps} steps; floor: real images at the same n)")
    return scores
