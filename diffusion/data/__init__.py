"""Data sets for training and evaluation.

Every data set yields `(image, label)`: image float32 (C, H, W) in [-1, 1] (raw uint8 with
`as_uint8=True`), label a Python int (-1 where there are none), and carries `channels`,
`image_size`, `num_classes` and `name`. Build one from a config with
`hydra.utils.instantiate(cfg.data)` (configs/data/*.yaml), then batch it with `make_loader`.
The only randomness is the random horizontal flip of training images.
"""
from __future__ import annotations

from .errors import DataError
from .folder import ImageFolder
from .loader import InMemoryLoader, describe, make_loader
from .memory import InMemoryImages
from .mnist5k import MNIST5k
from .npz import NpzImages
from .torchvision_sets import CIFAR10, MNIST

__all__ = [
    "CIFAR10", "DataError", "ImageFolder", "InMemoryImages", "InMemoryLoader", "MNIST", "MNIST5k", "NpzImages", "describe", "make_loader",
]
