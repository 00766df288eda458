"""Evaluations during training, handed to the ``Trainer`` by train.py as ``Periodic`` actions, each run every
``trainer.*_every`` optimizer steps and at the last step, on the main rank, from the EMA weights
(``training.actions.TrainingView``: the model, process, step, logger):

- ``sample_grid`` (``sample_every``): ``sample_count`` samples with ``cfg.sampler`` as a PNG grid and to
  TensorBoard; the same noise every time, so the grids show the training progress.
- ``bits_per_dim`` (``bpd_every``): the variational bound of the held-out 8-bit images in bits/dim (all N terms
  for DDPM unless ``bpd_t_samples``), on uniformly dequantized pixels with fixed draws.
- ``FidLog`` (``fid_every``, off by default): ``fid_count`` samples scored like ``evaluate.py task=fid`` under
  ``fid/``: ``fid``, ``kid`` (and ``kid_std``) against the train split, and ``fid_floor``/``kid_floor``, the same
  scores of real test images at the same n (FID is biased upwards at small n, so the curve means something only
  beside its floor). For 28x28 MNIST digits also ``digit_fd``, ``digit_kid`` and their floors (the shipped digit
  classifier, against the test split). Without the Inception weights FID is skipped with one warning and the
  digit scores are still logged. On a CPU the Inception network costs ~0.3 s an image (``fid_inception: false``
  keeps only the digit scores).

The grid and the bound also carry their cost estimate (network evaluations times one timed forward pass) for
the time budget (``training.budget``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusion.evaluation.quality import data_quality
from diffusion.fitting import resolve_sampler
from diffusion.samplers import SamplerSpec, sampler_from_config
from diffusion.training.actions import Periodic, TrainingView
from diffusion.training.budget import forward_seconds
from diffusion.training.build import build_process
from diffusion.training.setup import holdout_batch
from diffusion.utils import derive_seed

log = logging.getLogger(__name__)

LOGGED = ("fid", "kid", "kid_std", "fid_floor", "kid_floor", "digit_fd", "digit_fd_floor", "digit_kid", "digit_kid_std",
          "digit_kid_floor", "digit_near_copies")


def training_evaluations(cfg: DictConfig, dataset: Any = None, holdout: Tensor | None = None) -> list[Periodic]:
    """The evaluations ``cfg.trainer`` switches on, as ``Periodic`` actions for the ``Trainer``. The grids' sampler
    is checked against the process now (and a schedule file read: ``fitting.resolve_sampler``), so that a bad
    sampler option fails before the first step. ``holdout``:
    8-bit images (uint8, N x C x H x W) for bits/dim, by default ``holdout_batch(cfg, dataset)``."""
    tc, spec = cfg.trainer, None
    if cfg.get("sampler") is not None:
        # a schedule file is read now; timesteps=fitted is sample.py's alone (one line, before the first step)
        spec = resolve_sampler(sampler_from_config(cfg.sampler), build_process(cfg), fit=False)
    seed, clip = int(tc.seed), tc.sample_clip
    actions = []
    if tc.sample_every > 0 and tc.sample_count > 0 and spec is not None:
        n = int(tc.sample_count)
        actions.append(Periodic("sample grid", int(tc.sample_every), lambda view: sample_grid(view, spec, n, seed, clip),
                                cost=lambda view: spec.steps * forward_seconds(view, n, autocast=True)))
    if tc.bpd_every > 0:
        from diffusion.likelihood import bound_cost

        images, t_samples = holdout if holdout is not None else holdout_batch(cfg, dataset), tc.bpd_t_samples
        actions.append(Periodic("bits/dim", int(tc.bpd_every), lambda view: bits_per_dim(view, images, seed, t_samples),
                                cost=lambda view: bound_cost(view.process, t_samples) * forward_seconds(view, len(images), False)))
    if tc.fid_every > 0 and spec is not None:
        actions.append(Periodic("FID", int(tc.fid_every), FidLog(cfg, spec)))
    return actions


def _fork_rng(view: TrainingView):
    """The evaluations draw from their own seeded generators and leave the training RNG streams as they were."""
    return torch.random.fork_rng(devices=[view.device] if view.device.type == "cuda" else [])


@torch.no_grad()
def sample_grid(view: TrainingView, spec: SamplerSpec, n: int, seed: int, clip: float | None = 1.0) -> Path | None:
    """A grid of ``n`` samples from ``view.model`` with ``spec`` (main rank), seeded from ``seed`` alone."""
    if not view.is_main:
        return None
    labels = None if view.num_classes is None else torch.arange(n, device=view.device) % view.num_classes
    generator = torch.Generator(view.device).manual_seed(derive_seed(seed, "samples"))
    # the network in the training precision (bf16 autocast leaves the sampler's own arithmetic in fp32)
    with _fork_rng(view), view.autocast():
        x = spec(view.process, view.model, (n, *view.image_shape), generator=generator, class_labels=labels,
                 device=view.device, clip_denoised=clip)
    return view.logger.grid(view.step, x)


@torch.no_grad()
def bits_per_dim(view: TrainingView, holdout: Tensor, seed: int, t_samples: int | None = None) -> float | None:
    """Bits/dim of the 8-bit ``holdout`` images under ``view.model``: the variational bound on uniformly
    dequantized pixels (fixed draws; main rank), logged as ``eval/bits_per_dim``."""
    if not view.is_main:
        return None
    from diffusion import likelihood

    generator = torch.Generator(view.device).manual_seed(derive_seed(seed, "bpd"))
    x = likelihood.dequantize(holdout.to(view.device), generator=generator)
    with _fork_rng(view):
        nats = likelihood.variational_bound(view.process, view.model, x, generator=generator, t_samples=t_samples)
    bpd = float(likelihood.bits_per_dim(nats, x[0].numel()).mean())
    view.logger.scalars(view.step, {"eval/bits_per_dim": bpd})
    log.info(f"step {view.step}: {bpd:.3f} bits/dim (variational bound, {len(x)} held-out images)")
    return bpd


class FidLog:
    """FID/KID (and the digit scores) of ``trainer.fid_count`` samples with ``spec``, logged under ``fid/``; the
    scorer is built at the first call and kept (its reference features are cached on disk by content hash)."""

    def __init__(self, cfg: DictConfig, spec: SamplerSpec):
        tc = cfg.trainer
        self.data_cfg, self.spec = cfg.data, spec
        self.n, self.seed, self.clip = int(tc.get("fid_count", 1000)), int(tc.seed), tc.sample_clip
        self.inception = bool(tc.get("fid_inception", True))
        self.quality = None

    @torch.no_grad()
    def __call__(self, view: TrainingView) -> dict[str, Any] | None:
        """Score the samples and log them (main rank); the scores, or None when nothing can be scored."""
        if not view.is_main:
            return None
        from diffusion.runs import generate

        if self.quality is None:  # as evaluate.py task=fid scores: against the train split, the floor on the test split
            self.quality = data_quality(view.image_shape, self.data_cfg, device=view.device, log=log.warning,
                                        fid="auto" if self.inception else False)
        if self.quality.fid is None and self.quality.digits is None:
            return None
        # the same seeds every time, so the curve shows the model changing, not the noise; the network runs in
        # the training precision as for the sample grids
        with _fork_rng(view), view.autocast():
            images, _, _ = generate(view.process, view.model, self.n, view.image_shape, sampler=self.spec,
                                    seed=self.seed, batch_size=min(self.n, 256), num_classes=view.num_classes,
                                    device=view.device, clip_denoised=self.clip)
        scores = self.quality(images)
        view.logger.scalars(view.step, {f"fid/{k}": float(scores[k]) for k in LOGGED if scores.get(k) is not None})
        shown = ", ".join(f"{k}={scores[k]:.4g}" for k in ("fid", "fid_floor", "digit_fd", "digit_fd_floor")
                          if scores.get(k) is not None)
        log.info(f"step {view.step}: {shown} ({self.n} samples, {self.spec.name} {self.spec.steps} steps; "
                 "floor: real images at the same n)")
        return scores


__all__ = ["training_evaluations", "sample_grid", "bits_per_dim", "FidLog", "LOGGED"]
