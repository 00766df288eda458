"""Any ``.npz`` of uint8 images (N, H, W, C) as a data set, held in memory: ``data=npz data.path=<file>``.

Keys: ``images`` and, optionally, ``labels`` (the layout of the shared CIFAR-10 arrays), or numpy's default
``arr_0`` / ``arr_1`` (what ``np.savez(path, images, labels)`` and ``sample.py`` write). The file is read with
``np.load(allow_pickle=False)``: an array file cannot run code. Images are square, 1 (grayscale) or 3 (RGB)
channels, channels last; they are stored channels first (N, C, H, W) like every other data set and scaled to
[-1, 1] on the way out (``InMemoryImages``).

Splits: ``split=train`` reads ``path``; ``split=test`` reads ``test_path`` when given, else ``path`` again (as a
folder without a ``test/`` subfolder does: evaluation then reports no real-vs-real floor).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from diffusion.buildable import buildable

from .errors import DataError
from .memory import InMemoryImages, check_split

IMAGE_KEYS = ("images", "arr_0")
LABEL_KEYS = ("labels", "arr_1")


def read_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """(images uint8 (N, H, W, C), labels int64 (N,) or None) of an npz file; one-line DataErrors naming the fix."""
    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist: set data.path=/path/to/images.npz")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            image_key = next((k for k in IMAGE_KEYS if k in keys), None)
            if image_key is None:
                raise DataError(f"{path} holds no 'images' or 'arr_0' array (keys: {', '.join(keys) or 'none'}): "
                                "save it as np.savez(path, images=uint8_NHWC, labels=ints)")
            images = archive[image_key]
            label_key = LABEL_KEYS[IMAGE_KEYS.index(image_key)]
            labels = archive[label_key] if label_key in keys else None
    except AttributeError:  # np.load of a plain .npy returns an array, which has no keys()
        raise DataError(f"{path} is a single array, not an .npz archive: save it as np.savez(path, images=array)") from None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        if isinstance(error, DataError):
            raise
        first = (str(error).splitlines() or [type(error).__name__])[0][:120]
        raise DataError(f"{path} is not a readable .npz of arrays ({type(error).__name__}: {first}): "
                        "save it with np.savez(path, images=uint8_NHWC)") from None
    if images.dtype != np.uint8:
        raise DataError(f"{path}: images must be uint8 (0-255), got {images.dtype}: convert with "
                        "np.clip(x, 0, 255).astype(np.uint8) (floats in [0, 1]: x * 255 first)")
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[1] != images.shape[2]:
        raise DataError(f"{path}: images must be square (N, H, W, C) with C = 1 or 3 (channels last), got shape "
                        f"{images.shape}: transpose NCHW arrays with x.transpose(0, 2, 3, 1)")
    if len(images) == 0:
        raise DataError(f"{path} holds no images (shape {images.shape}): point data.path at a file with some")
    if labels is not None:
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{path}: {labels.shape[0] if labels.ndim else 0} labels (shape {labels.shape}) for "
                            f"{len(images)} images: save one integer label per image, or none")
        if labels.dtype.kind not in "iu" or (len(labels) and labels.min() < 0):
            raise DataError(f"{path}: labels must be integers 0..K-1, got {labels.dtype}"
                            f"{f' with minimum {labels.min()}' if labels.dtype.kind in 'iu' else ''}: relabel them 0..K-1")
        labels = labels.astype(np.int64)
    return images, labels


@buildable
class NpzImages(InMemoryImages):
    """uint8 images (N, H, W, C) from an ``.npz`` (``images``/``labels`` or ``arr_0``/``arr_1``), in memory.

    Args:
        path: the training images.
        test_path: the test split's file (default: ``path`` again).
        split: "train" or "test".
        flip: random horizontal flips, train split only.
        as_uint8: raw uint8 (C, H, W) instead of float32 in [-1, 1].
        num_classes: classes for class conditioning; default: max(label) + 1 when the file has labels, else none.
    """

    name = "npz"

    def __init__(self, path: str, test_path: str | None = None, split: str = "train", flip: bool = True,
                 as_uint8: bool = False, num_classes: int | None = None) -> None:
        check_split(self.name, split)
        self.path = os.fspath(test_path if split == "test" and test_path else path)
        images, labels = read_npz(self.path)
        if labels is None:
            if num_classes is not None:
                raise DataError(f"data.num_classes={num_classes} but {self.path} holds no labels: set "
                                "data.num_classes=null, or save labels (np.savez(path, images=..., labels=...))")
            label_tensor = torch.full((len(images),), -1, dtype=torch.int64)
        else:
            if num_classes is None:
                num_classes = int(labels.max()) + 1
            elif labels.max() >= num_classes:
                raise DataError(f"{self.path}: label {int(labels.max())} is outside 0..{num_classes - 1}: "
                                f"set data.num_classes={int(labels.max()) + 1} or null")
            label_tensor = torch.from_numpy(labels)
        chw = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))  # HWC -> CHW
        super().__init__(chw, label_tensor, num_classes=num_classes, split=split, flip=flip, as_uint8=as_uint8)

    def __repr__(self) -> str:
        return f"NpzImages(path={self.path!r}, " + super().__repr__().split("(", 1)[1]
