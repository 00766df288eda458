"""Which sample-quality scores apply to a data set, built once and applied to any batch of uint8 samples.

- ``kid`` +- ``kid_std``, ``fid``: KID and FID against the data set's train split (torch-fidelity's Inception,
  ``fid.py``), when the weights can be had; otherwise None, with the one-line reason in ``notes``. With held-out real
  images (the test split) also ``kid_floor``/``fid_floor``: the same scores of real images at the same n. KID is
  unbiased, FID is not (at n = 1,000 even real images score far above 0), so KID leads and FID is read beside its
  floor. Off by default for 1x28x28 digits (``inception="auto"``): there the Inception pass costs minutes on a CPU
  and says less than the digit scores below; ``inception=True`` turns it on.
- ``digit_*``: for 1x28x28 digits (MNIST, MNIST5k), the digit report (``digit_metric``): Frechet distance and KID
  in the shipped digit classifier's features against the MNIST5k test and train splits, their real-vs-real floors
  at the same n, class evenness and a memorization check. Offline, the same number on every machine.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from diffusion.errors import EvaluationError
from diffusion.evaluation.digit_features import cache_dir

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


def inception_default(shape: tuple[int, ...], data_target: str | None = None) -> bool:
    """Whether ``inception=auto`` computes Inception FID/KID: yes, except for 1x28x28 MNIST-like digits."""
    return not is_digits(shape, data_target)


SCORES = ("fid", "kid", "kid_std", "digit_fd", "digit_kid", "digit_kid_std")  # None when unavailable


@dataclass
class Quality:
    """Callable: uint8 images (N, C, H, W) -> {"fid", "kid", "kid_std", "digit_fd", ...: float | None, ...}."""

    fid: Any = None  # fid.FID
    digits: Any = None  # digit_metric.DigitMetric
    notes: list[str] = field(default_factory=list)

    def __call__(self, images: Tensor) -> dict[str, Any]:
        scores: dict[str, Any] = dict.fromkeys(SCORES)
        if self.fid is not None:
            scores.update(self.fid.scores(images))
            scores.update(self.fid.floor(len(images)) or {})
        if self.digits is not None:
            scores.update(self.digits(images))
        return scores

    def describe(self) -> dict[str, Any]:
        return {"fid": self.fid is not None, "digit_fd": self.digits is not None,
                "inception_weights_sha256": None if self.fid is None else getattr(self.fid.net, "weights_id", None),
                "digit_classifier_test_accuracy": None if self.digits is None else self.digits.digits.test_accuracy,
                "notes": self.notes}


def build_quality(shape: tuple[int, ...], reference: Callable[[], Tensor] | None, *, data_target: str | None = None,
                  fid: bool | str = "auto", digit_fd: bool | str = "auto", inception_weights: str | None = None,
                  inception_url: str | None = None, device: torch.device | str = "cpu",
                  cache: str | os.PathLike | None = None, log: Callable[[str], None] = print,
                  heldout: Callable[[], Tensor] | None = None) -> Quality:
    """The scores for samples of per-image ``shape``. ``reference()`` returns the real uint8 images FID compares
    against, ``heldout()`` real images for its floor (each called only if FID is on). ``fid`` (Inception FID/KID):
    True, False or "auto" (on where the weights can be had, except for 1x28x28 digits: ``inception_default``);
    ``digit_fd``: True, False or "auto" (on for digits)."""
    from diffusion.evaluation.digit_metric import DigitMetric
    from diffusion.evaluation.fid import FID, InceptionUnavailable, load_inception

    quality = Quality()
    cache_path = cache_dir() if cache is None else cache
    want_digits = is_digits(shape, data_target) if digit_fd == "auto" else bool(digit_fd)
    if want_digits:
        if tuple(shape) != DIGIT_SHAPE:
            raise EvaluationError(f"digit_fd needs 1x28x28 digits, these samples are {'x'.join(map(str, shape))}: set digit_fd=false")
        quality.digits = DigitMetric()
        log(f"digit classifier: test accuracy {quality.digits.digits.test_accuracy:.2%} on the MNIST5k test split")
    if fid == "auto" and not inception_default(shape, data_target):
        note = ("Inception FID/KID off for 1x28x28 digits (minutes on a CPU, and the digit scores say more): "
                "fid.inception=true turns it on")
        quality.notes.append(note)
        log(note)
        fid = False
    if fid in (True, "auto", "true"):
        try:
            if reference is None:
                raise InceptionUnavailable("FID unavailable: no reference data set (the data config is unknown)")
            net = load_inception(inception_weights, inception_url, device, cache=cache_path, log=log)
            quality.fid = FID(net, reference(), cache=cache_path, device=device, heldout=heldout, log=log)
        except InceptionUnavailable as e:
            if fid is True or fid == "true":
                raise
            quality.notes.append(str(e))
            log(f"{e} (the FID column says n/a)")
    return quality


def data_quality(shape: tuple[int, ...], data_cfg: DictConfig | None, **options: Any) -> Quality:
    """``build_quality`` for samples of a data config's images: FID against its train split, with its floor on the
    test split where the data set has one. Without a data config (a run that saved none): no reference, no floor.
    ``options``: ``build_quality``'s keywords (fid, digit_fd, inception_weights, device, log, ...). The one home of
    the sample-quality setup of ``evaluate.py`` (sweep, fid) and of the scores logged during training."""
    from diffusion.runs.load import build_data

    if data_cfg is None:
        return build_quality(tuple(shape), None, data_target=None, heldout=None, **options)

    def reference() -> Tensor:
        return dataset_images(build_data(data_cfg, "train"))

    def heldout() -> Tensor | None:  # real images FID's floor is measured on: the test split, where there is one
        try:
            return dataset_images(build_data(data_cfg, "test"))
        except Exception:  # noqa: BLE001 - no test split (a folder of images): no floor
            return None

    return build_quality(tuple(shape), reference, data_target=data_cfg.get("_target_"), heldout=heldout, **options)


def digit_reference() -> DictConfig:
    """The data config of the bundled MNIST5k (``configs/data/mnist5k.yaml``, from the class's signature): what
    1x28x28 digit samples are compared with when no run and no ``data=`` say otherwise."""
    from diffusion.data import MNIST5k
    from diffusion.schemas import schema_from_signature

    return OmegaConf.structured(schema_from_signature(MNIST5k, "diffusion.data.MNIST5k"))


def _v(value: Any, digits: int = 3, scale: float = 1.0) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def _pm(mean: Any, std: Any, scale: float = 1e3) -> str:
    return "n/a" if mean is None else f"{mean * scale:.3f} ± {std * scale:.3f}"


def quality_table(scores: dict[str, Any], n: int, name: str = "samples") -> str:
    """A Markdown table of a ``Quality`` result: each score of the n samples beside real images' at the same n."""
    rows = [("KID x1e3 (Inception, vs train split; unbiased)", _pm(scores.get("kid"), scores.get("kid_std")),
             _pm(scores.get("kid_floor"), scores.get("kid_floor_std")), scores.get("fid_floor_n")),
            ("FID (Inception, vs train split; biased at small n: read beside real)", _v(scores.get("fid")),
             _v(scores.get("fid_floor")), scores.get("fid_floor_n"))]
    if scores.get("digit_fd") is not None:
        rows += [("digit FD (vs test split)", _v(scores["digit_fd"]), _v(scores["digit_fd_floor"]),
                  scores["digit_fd_floor_n"]),
                 ("digit FD (vs train split)", _v(scores["digit_fd_train"]), _v(scores["digit_fd_train_floor"]),
                  scores["digit_fd_train_floor_n"]),
                 ("digit KID (vs test split)", _pm(scores["digit_kid"], scores["digit_kid_std"], 1.0),
                  _pm(scores["digit_kid_floor"], scores["digit_kid_floor_std"], 1.0), scores["digit_fd_floor_n"]),
                 ("class evenness H/log10", _v(scores["digit_evenness"]), _v(scores["digit_evenness_test"]), 500),
                 ("nearest-train-digit distance, median", _v(scores["digit_nn_median"]),
                  _v(scores["digit_nn_median_test"]), 500),
                 ("nearest-train distance / test digits' (same class), median", _v(scores["digit_nn_ratio"]),
                  "1.000", 500),
                 ("near copies (nearer than 95% of test digits of the class)", _v(scores["digit_near_copies"]),
                  "0.050", 500)]
    lines = [f"Quality of {name} (n={n}); 'real' is real images at the same n (the floor; lower is better "
             "except evenness, where 1 is best).", "",
             "| score | samples | real | real n |", "|---|---:|---:|---:|"]
    lines += [f"| {label} | {value} | {floor} | {'n/a' if floor_n is None else floor_n} |"
              for label, value, floor, floor_n in rows]
    if scores.get("digit_class_counts") is not None:
        lines += ["", f"predicted classes 0-9: {scores['digit_class_counts']}"]
    return "\n".join(lines) + "\n"
