r"""The digit report: how a set of generated 28x28 digits compares with the real MNIST5k digits, in numbers that
mean the same on every machine (the shipped classifier, ``digit_features``).

For n samples it gives
- ``digit_fd``: the Frechet distance of their 128-d classifier features to the *test* split (500 digits the model
  never saw), and ``digit_fd_train`` to the train split (4,500 digits it trained on);
- the real-vs-real floor at the same n: ``digit_fd_floor``, n real train digits against the test split (and
  ``digit_fd_train_floor``, min(n, 500) test digits against the train split). FD is biased upwards at small n, so a
  score means something only next to its floor;
- ``digit_kid`` +- ``digit_kid_std``: KID (``kid.py``) against the test split's features, and its floor;
- ``digit_evenness``: the normalised entropy H(p) / log 10 of the predicted classes (1: all ten equally often),
  beside the test digits' own ``digit_evenness_test``; ``digit_class_counts``;
- a memorization check, in pixel space (a copied training digit is near-identical in pixels, while features group
  digits that merely look alike): each sample's Euclidean distance to its nearest training digit, against the same
  distance for the test digits of the same predicted class (a "1" lies much nearer its neighbours than an "8", so
  the comparison is made within a class). ``digit_nn_ratio`` is the median over samples of (distance / the class's
  median test-digit distance): about 1 for a model that generalises, towards 0 for one that copies.
  ``digit_near_copies`` is the fraction of samples nearer a training digit than 95% of their class's test digits
  are: about 0.05 unless the model copies, 1 for copies.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffusion.evaluation.digit_features import DigitFeatures, _mnist5k, load_digit_features, to_float_images
from diffusion.evaluation.frechet import frechet_distance, gaussian_stats
from diffusion.evaluation.kid import kid

NUM_CLASSES = 10
NEAR_COPY_QUANTILE = 0.05  # a sample is a near copy when it is nearer a training digit than 95% of real unseen digits


def evenness(classes: Tensor, num_classes: int = NUM_CLASSES) -> tuple[float, list[int]]:
    """H(p) / log K of the class frequencies p (1: uniform, 0: one class), and the counts."""
    counts = torch.bincount(classes.flatten().long(), minlength=num_classes).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float(entropy / math.log(num_classes)), [int(c) for c in counts]


def nearest_distances(x: Tensor, bank: Tensor, batch_size: int = 1024) -> Tensor:
    """Euclidean distance of each row of ``x`` (n, d) to its nearest row of ``bank`` (m, d), float64 (n,)."""
    bank = bank.double()
    return torch.cat([torch.cdist(x[i:i + batch_size].double(), bank).min(1).values
                      for i in range(0, len(x), batch_size)]) if len(x) else torch.zeros(0, dtype=torch.float64)


class DigitMetric:
    """Callable: uint8 digits (N, 1, 28, 28) -> the flat dict of numbers described in the module docstring."""

    def __init__(self, digits: DigitFeatures | None = None, seed: int = 0, kid_subsets: int = 100,
                 kid_subset_size: int = 1000):
        self.digits = digits if digits is not None else load_digit_features()
        self.seed, self.kid_subsets, self.kid_subset_size = seed, kid_subsets, kid_subset_size
        train, _ = _mnist5k("train")
        test, test_labels = _mnist5k("test")
        self.train_images, self.test_images = train, test
        self.train_features, self.test_features = self.digits.features(train), self.digits.features(test)
        self.train_pixels = to_float_images(train).flatten(1)
        test_nn = nearest_distances(to_float_images(test).flatten(1), self.train_pixels)
        test_classes = self.digits.predict(test)
        self.test_nn_median = float(test_nn.median())
        # per predicted class: the median and the 5% quantile of the test digits' nearest-training-digit distances
        self.class_nn_median = torch.stack([test_nn[test_classes == c].median() for c in range(NUM_CLASSES)])
        self.class_nn_p05 = torch.stack([torch.quantile(test_nn[test_classes == c], NEAR_COPY_QUANTILE)
                                         for c in range(NUM_CLASSES)])
        self.test_evenness, _ = evenness(test_classes)
        self._floors: dict[int, dict[str, float]] = {}

    def _generator(self, *parts: int) -> torch.Generator:
        return torch.Generator().manual_seed(int(np.random.SeedSequence((self.seed, *parts)).generate_state(1)[0]))

    def _kid(self, features: Tensor, *parts: int) -> tuple[float, float]:
        return kid(features, self.test_features, self.kid_subsets, self.kid_subset_size, self._generator(*parts))

    def floor(self, n: int) -> dict[str, float]:
        """Real against real at n: n train digits against the test split, min(n, 500) test digits against the train
        split (seeded draws without replacement; computed once per n)."""
        if n not in self._floors:
            g = self._generator(n, 1)
            n_train, n_test = min(n, len(self.train_images)), min(n, len(self.test_images))
            f_train = self.train_features[torch.randperm(len(self.train_features), generator=g)[:n_train]]
            f_test = self.test_features[torch.randperm(len(self.test_features), generator=g)[:n_test]]
            kid_mean, kid_std = self._kid(f_train, n, 2)
            self._floors[n] = {
                "digit_fd_floor": frechet_distance(*gaussian_stats(f_train), *self.digits.reference["test"]),
                "digit_fd_floor_n": n_train,
                "digit_fd_train_floor": frechet_distance(*gaussian_stats(f_test), *self.digits.reference["train"]),
                "digit_fd_train_floor_n": n_test,
                "digit_kid_floor": kid_mean, "digit_kid_floor_std": kid_std}
        return self._floors[n]

    def __call__(self, images: Tensor) -> dict[str, Any]:
        n = len(images)
        if n < 2:
            raise ValueError(f"the digit metric needs at least 2 images, got {n}")
        features = self.digits.features(images)
        mu, cov = gaussian_stats(features)
        kid_mean, kid_std = self._kid(features, n, 3)
        classes = self.digits.predict(images)
        even, counts = evenness(classes)
        nn = nearest_distances(to_float_images(images).flatten(1), self.train_pixels)
        return {"digit_n": n,
                "digit_fd": frechet_distance(mu, cov, *self.digits.reference["test"]),
                "digit_fd_train": frechet_distance(mu, cov, *self.digits.reference["train"]),
                "digit_kid": kid_mean, "digit_kid_std": kid_std,
                **self.floor(n),
                "digit_evenness": even, "digit_evenness_test": self.test_evenness, "digit_class_counts": counts,
                "digit_nn_median": float(nn.median()), "digit_nn_median_test": self.test_nn_median,
                "digit_nn_ratio": float((nn / self.class_nn_median[classes]).median()),
                "digit_near_copies": float((nn < self.class_nn_p05[classes]).double().mean())}


__all__ = ["DigitMetric", "evenness", "nearest_distances", "load_digit_features"]
