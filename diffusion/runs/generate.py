"""Many samples in batches: seeded per batch, counted (NFE), timed, and optionally streamed to a ``BatchStore``.

Reproducibility: batch i draws all its randomness from its own CPU generator seeded with
derive_seed(seed, "batch", i) and always draws a full batch of B = min(batch_size, n) samples (the last one is cropped),
so sample j is a function of (seed, B, j) alone: the same on any device, for any n >= B, and a resumed or
extended run continues exactly where it stopped. The images do depend on B (batch i holds samples
i*B .. (i+1)*B - 1, drawn as one tensor): keep ``batch_size`` fixed to reproduce a run (the manifest records it).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from diffusion.runs.store import BatchStore, to_uint8
from diffusion.errors import EvaluationError
from diffusion.processes.base import Process
from diffusion.samplers.spec import SamplerSpec
from diffusion.utils import derive_seed


def batch_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator of batch ``index``: independent streams for every (seed, index) pair."""
    return torch.Generator().manual_seed(derive_seed(seed, "batch", int(index)))


def class_labels_for(n: int, num_classes: int | None, class_labels: int | Sequence[int] | None) -> Tensor | None:
    """Labels of samples 0..n-1: None for an unconditional model; by default 0, 1, ..., K-1, 0, 1, ... (balanced);
    an int: that class for every sample; a list: repeated cyclically."""
    if num_classes is None:
        if class_labels is not None:
            raise EvaluationError("class_labels given, but the checkpoint's model is unconditional (model.num_classes is null): drop class_labels")
        return None
    if class_labels is None:
        return torch.arange(n) % num_classes
    values = [int(class_labels)] if isinstance(class_labels, int) else [int(c) for c in class_labels]
    if not values:
        raise EvaluationError("class_labels is an empty list: give class indices, e.g. class_labels=[0,1,2]")
    bad = [c for c in values if not 0 <= c < num_classes]
    if bad:
        raise EvaluationError(f"class label {bad[0]} is outside 0..{num_classes - 1}: the model has {num_classes} classes")
    return torch.tensor(values)[torch.arange(n) % len(values)]


@dataclass
class GenerationStats:
    """What a generation run cost: model evaluations per batch, wall time, throughput (new batches only)."""

    batches_run: int = 0
    batches_skipped: int = 0
    images_run: int = 0
    seconds: float = 0.0
    nfe_per_batch: list[int] = field(default_factory=list)

    @property
    def nfe(self) -> float:
        """Mean model evaluations per batch (= per sample trajectory); NaN if every batch was resumed."""
        return float(np.mean(self.nfe_per_batch)) if self.nfe_per_batch else float("nan")

    @property
    def images_per_second(self) -> float:
        return self.images_run / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"nfe": self.nfe, "seconds": self.seconds, "images_per_second": self.images_per_second,
                "batches_run": self.batches_run, "batches_skipped": self.batches_skipped, "images_run": self.images_run}


def check_request(n: int, batch_size: int, num_classes: int | None,
                  class_labels: int | Sequence[int] | None = None, guidance_scale: float | None = None) -> None:
    """``EvaluationError`` (one line) for a request ``generate`` would refuse: callers that print or write
    anything first (sample.py) check here before they do."""
    if n < 1 or batch_size < 1:
        raise EvaluationError(f"n and batch_size must be positive, got n={n}, batch_size={batch_size}")
    class_labels_for(1, num_classes, class_labels)
    if guidance_scale is not None and num_classes is None:
        raise EvaluationError("guidance_scale needs a class-conditional model: this checkpoint's model is unconditional")


def generate(process: Process, model: Callable[..., Tensor], n: int, shape: Sequence[int], *,
             sampler: SamplerSpec | str, steps: int | None = None, seed: int = 0, batch_size: int = 64,
             options: dict[str, Any] | None = None,
             num_classes: int | None = None, class_labels: int | Sequence[int] | None = None,
             guidance_scale: float | None = None, device: torch.device | str = "cpu",
             store: BatchStore | None = None, progress: bool = False, clip_denoised: float | None = 1.0,
             ) -> tuple[Tensor | None, Tensor | None, GenerationStats]:
    """``n`` samples of per-sample ``shape`` (C, H, W) as uint8 (n, C, H, W), their labels, and the cost.

    sampler: a ``SamplerSpec`` (or a sampler name with ``steps`` and ``options``).
    With ``store`` each batch goes to disk as soon as it is done and existing batches are skipped; the images
    are then not kept in memory (returns None, None, stats): gather them with ``store.gather``.
    """
    from diffusion.samplers import CountingModel

    spec = sampler if isinstance(sampler, SamplerSpec) else SamplerSpec(sampler, steps or 50, **(options or {}))

    check_request(n, batch_size, num_classes, class_labels, guidance_scale)
    batch_size = min(batch_size, n)
    num_batches = -(-n // batch_size)
    labels_all = class_labels_for(num_batches * batch_size, num_classes, class_labels)
    stats = GenerationStats()
    kept_images, kept_labels = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, unit="img", desc=f"{spec.name} x{spec.steps}", dynamic_ncols=True)
    counter = CountingModel(model)
    for index in range(num_batches):
        lo, hi = index * batch_size, min(n, (index + 1) * batch_size)
        if store is not None and store.count(index) == hi - lo:
            stats.batches_skipped += 1
            if bar is not None:
                bar.update(hi - lo)
            continue
        # a full batch even at the end, cropped: sample j does not depend on n
        labels = None if labels_all is None else labels_all[lo:lo + batch_size].to(device)
        counter.nfe = 0
        start = time.perf_counter()
        x0 = spec(process, counter, (batch_size, *shape), generator=batch_generator(seed, index),
                  class_labels=labels, guidance_scale=guidance_scale, progress=progress and num_batches == 1,
                  device=device, clip_denoised=clip_denoised)
        images = to_uint8(x0[: hi - lo]).cpu()
        labels = None if labels is None else labels[: hi - lo]
        stats.seconds += time.perf_counter() - start
        stats.batches_run += 1
        stats.images_run += hi - lo
        stats.nfe_per_batch.append(counter.nfe)
        if store is not None:
            store.write(index, images, None if labels is None else labels.cpu())
        else:
            kept_images.append(images)
            if labels is not None:
                kept_labels.append(labels.cpu())
        if bar is not None:
            bar.update(hi - lo)
            bar.set_postfix(nfe=counter.nfe, img_s=f"{stats.images_per_second:.2f}")
    if bar is not None:
        bar.close()
    if store is not None:
        return None, None, stats
    return torch.cat(kept_images), (torch.cat(kept_labels) if kept_labels else None), stats
