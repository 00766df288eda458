"""Image data sets held in memory as one uint8 tensor, and their shared item/batch conversion.

Images are stored as the raw 8-bit values (N, C, H, W) and scaled on the way out,
x = u / 127.5 - 1, so that 0 -> -1 and 255 -> 1 exactly; `as_uint8=True` hands back the raw
values instead (evaluate.py dequantizes them itself for bits/dim, Ho et al. 2020, sec. 3.3).

Randomness: a random horizontal flip (train split only) is the only random step. Per item it
draws from torch's RNG in the process that loads the item: a DataLoader seeds each worker from
its own seeded generator, and with num_workers=0 it is the main process's RNG. The batched path
(`batch`, used by `InMemoryLoader`) takes an explicit `torch.Generator` instead.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .errors import DataError

SPLITS = ("train", "test")


def check_split(name: str, split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"{name}: split must be 'train' or 'test', got {split!r}: set data.split=train or data.split=test")
    return split


def to_unit_range(images: Tensor) -> Tensor:
    """uint8 in [0, 255] -> float32 in [-1, 1]."""
    return images.to(torch.float32).div_(127.5).sub_(1.0)


class InMemoryImages(Dataset):
    """A data set whose images are one preloaded uint8 tensor (N, C, H, W) with int64 labels (N,).

    Items are `(image, label)`: image float32 (C, H, W) in [-1, 1] (raw uint8 with `as_uint8`),
    label a Python int (-1 where the data set has none).
    """

    name: str = "in_memory"

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        num_classes: int | None,
        split: str = "train",
        flip: bool = False,
        as_uint8: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != images.shape[-2]:
            raise DataError(f"{self.name}: expected square uint8 images (N, C, H, W), got {tuple(images.shape)} {images.dtype}")
        if labels.shape != images.shape[:1]:
            raise DataError(f"{self.name}: {len(labels)} labels for {len(images)} images")
        self.split = check_split(self.name, split)
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)
        self._label_list = self.labels.tolist()  # Python ints: no tensor op per item
        self.channels = int(images.shape[1])
        self.image_size = int(images.shape[-1])
        self.num_classes = num_classes
        # Flips augment training only: evaluation sees each image exactly as stored.
        self.flip = bool(flip) and split == "train"
        self.as_uint8 = bool(as_uint8)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return (image.clone() if self.as_uint8 else to_unit_range(image)), self._label_list[index]

    def batch(self, indices: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Items `indices` as one batch, with one gather instead of one Python call per item.

        Returns the same values as stacking `self[i]` (flips aside, which come from `generator`).
        """
        images = self.images.index_select(0, indices)
        if self.flip:
            # index_copy_ rather than boolean-mask assignment: half the cost per batch.
            flipped = (torch.rand(len(indices), generator=generator) < 0.5).nonzero().squeeze(1)
            images.index_copy_(0, flipped, images.index_select(0, flipped).flip(-1))
        labels = self.labels.index_select(0, indices)
        return (images if self.as_uint8 else to_unit_range(images)), labels

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, n={len(self)}, shape={tuple(self.images.shape[1:])}, "
            f"num_classes={self.num_classes}, flip={self.flip}, as_uint8={self.as_uint8})"
        )
