"""Which sample-quality scores apply to a data set, built once and applied to any batch of uint8 samples.

- ``fid``: FID against the data set's train split (torch-fidelity's Inception), when the weights can be had;
  otherwise None, with the one-line reason in ``notes``.
- ``digit_fd``: for 1x28x28 digits (MNIST, MNIST5k), the Frechet distance in the features of the small digit
  classifier (``digit_features``), against the MNIST5k train digits: offline, seconds to set up.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from diffusion.errors import EvaluationError
from diffusion.evaluation.digit_features import DigitFeatures, cache_dir, load_digit_features

DIGIT_SHAPE = (1, 28, 28)


def dataset_images(dataset) -> Tensor:
    """All images of a data set built with ``as_uint8=True`` as one uint8 tensor (N, C, H, W)."""
    images = getattr(dataset, "images", None)
    if isinstance(images, Tensor) and images.dtype == torch.uint8:
        return images
    return torch.stack([torch.as_tensor(dataset[i][0]) for i in range(len(dataset))])


def is_digits(shape: tuple[int, ...], data_target: str | None = None) -> bool:
    """1x28x28 images of an MNIST-like data set (any target naming MNIST, or no data config at all)."""
    return tuple(shape) == DIGIT_SHAPE and (data_target is None or "mnist" in data_target.lower())


@dataclass
class Quality:
    """Callable: uint8 images (N, C, H, W) -> {"fid": float | None, "digit_fd": float | None}."""

    fid: Callable[[Tensor], float] | None = None
    digits: DigitFeatures | None = None
    notes: list[str] = field(default_factory=list)

    def __call__(self, images: Tensor) -> dict[str, float | None]:
        return {"fid": self.fid(images) if self.fid is not None else None,
                "digit_fd": self.digits.frechet_distance(images) if self.digits is not None else None}

    def describe(self) -> dict[str, Any]:
        return {"fid": self.fid is not None, "digit_fd": self.digits is not None,
                "digit_classifier_test_accuracy": None if self.digits is None else self.digits.test_accuracy,
                "notes": self.notes}


def build_quality(shape: tuple[int, ...], reference: Callable[[], Tensor] | None, *, data_target: str | None = None,
                  fid: bool | str = "auto", digit_fd: bool | str = "auto", inception_weights: str | None = None,
                  inception_url: str | None = None, device: torch.device | str = "cpu",
                  cache: str | os.PathLike | None = None, log: Callable[[str], None] = print) -> Quality:
    """The scores for samples of per-image ``shape``. ``reference()`` returns the real uint8 images FID compares
    against (called only if FID is on). ``fid``/``digit_fd``: True, False or "auto" (on where possible)."""
    from diffusion.evaluation.fid import FID, INCEPTION_URL, InceptionUnavailable, load_inception

    quality = Quality()
    cache_path = cache_dir() if cache is None else cache
    want_digits = is_digits(shape, data_target) if digit_fd == "auto" else bool(digit_fd)
    if want_digits:
        if tuple(shape) != DIGIT_SHAPE:
            raise EvaluationError(f"digit_fd needs 1x28x28 digits, these samples are {'x'.join(map(str, shape))}: set digit_fd=false")
        quality.digits = load_digit_features(cache_path, log=log)
        log(f"digit classifier: test accuracy {quality.digits.test_accuracy:.2%} on the MNIST5k test split")
    if fid in (True, "auto", "true"):
        try:
            if reference is None:
                raise InceptionUnavailable("FID unavailable: no reference data set (the data config is unknown)")
            net = load_inception(inception_weights, inception_url or INCEPTION_URL, device)
            quality.fid = FID(net, reference(), cache=cache_path, device=device)
        except InceptionUnavailable as e:
            if fid is True or fid == "true":
                raise
            quality.notes.append(str(e))
            log(f"{e} (the FID column says n/a)")
    return quality
