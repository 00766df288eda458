"""MNIST and CIFAR-10 in torchvision's on-disk formats, preloaded into memory.

torchvision finds, downloads and parses the files; we keep its uint8 arrays as one tensor and
skip its per-item PIL round trip (see `InMemoryImages`). Every failure a user can fix becomes a
one-line `DataError` that names the command to run.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import functools

import torch

from .errors import DataError
from .memory import InMemoryImages, check_split

# torchvision is imported inside the constructors: importing it costs ~2 s (it pulls in torch._dynamo),
# which the offline default (MNIST5k) should not pay.

# What a torchvision parser raises on a truncated or foreign file.
_CORRUPT = (AssertionError, EOFError, KeyError, TypeError, ValueError, pickle.UnpicklingError)


def _one_line(error: BaseException) -> str:
    """The error's first line, and its last (the underlying cause) when it has several."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def _load(build, name: str, config: str, root: str, download: bool, where: str):
    """Call a torchvision constructor and turn its failures into one-line DataErrors."""
    try:
        return build()
    except (RuntimeError, OSError) as error:
        if download:
            raise DataError(
                f"downloading {name} to {root} failed ({_one_line(error)}): check the internet connection, "
                f"or put the torchvision {name} files under {where}"
            ) from None
        raise DataError(
            f"{name} not found under {root}: run python train.py data={config} data.download=true "
            f"(or put the torchvision {name} files under {where})"
        ) from None
    except _CORRUPT as error:
        raise DataError(
            f"{name} files under {where} are corrupt ({_one_line(error)}): delete them and "
            f"run python train.py data={config} data.download=true"
        ) from None


class MNIST(InMemoryImages):
    """MNIST (60,000 train / 10,000 test, 28x28, 1 channel, 10 classes) via torchvision.

    Reads `root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte` (torchvision unpacks the
    .gz files it downloads to these names).
    """

    name = "mnist"

    def __init__(self, root: str = "data/mnist", split: str = "train", download: bool = False, as_uint8: bool = False) -> None:
        check_split(self.name, split)
        root = os.fspath(root)
        where = os.path.join(root, "MNIST", "raw")
        from torchvision.datasets import MNIST as TorchvisionMNIST

        source = _load(
            lambda: TorchvisionMNIST(root, train=split == "train", download=download),
            "MNIST", "mnist", root, download, where,
        )
        images = source.data.reshape(-1, 1, 28, 28)
        super().__init__(images, source.targets, num_classes=10, split=split, flip=False, as_uint8=as_uint8)


@functools.cache
def _cifar10_batches() -> type:
    """torchvision's CIFAR-10 reader with the per-file md5 check moved to download time.

    torchvision parametrizes its CIFAR readers by the class attributes below (its CIFAR100 is this
    same subclassing); an md5 of None makes `check_integrity` test only that the file exists. The
    download still verifies the archive's md5 (`tgz_md5`), and a truncated or foreign batch fails
    to unpickle or reshape, which we report as corrupt. Hashing 180 MB at every start buys little
    beyond that, and it would reject any file in the real format but with other contents (such as
    the tiny batches the tests write).
    """
    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

    class CIFAR10Batches(TorchvisionCIFAR10):
        train_list = [[filename, None] for filename, _ in TorchvisionCIFAR10.train_list]
        test_list = [[filename, None] for filename, _ in TorchvisionCIFAR10.test_list]
        meta = {**TorchvisionCIFAR10.meta, "md5": None}

    return CIFAR10Batches


class CIFAR10(InMemoryImages):
    """CIFAR-10 (50,000 train / 10,000 test, 32x32, 3 channels, 10 classes) via torchvision.

    Reads the python pickle batches `root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`.

    Args:
        flip: random horizontal flips on the train split (the usual CIFAR-10 augmentation, Ho et al. 2020).
    """

    name = "cifar10"

    def __init__(
        self, root: str = "data/cifar10", split: str = "train", download: bool = False, as_uint8: bool = False, flip: bool = True
    ) -> None:
        check_split(self.name, split)
        root = os.fspath(root)
        reader = _cifar10_batches()
        where = os.path.join(root, reader.base_folder)
        source = _load(
            lambda: reader(root, train=split == "train", download=download),
            "CIFAR-10", "cifar10", root, download, where,
        )
        if source.data.shape[1:] != (32, 32, 3) or len(source.targets) != len(source.data):
            raise DataError(f"CIFAR-10 files under {where} are corrupt (unexpected shapes): delete them and re-download")
        images = torch.from_numpy(np.ascontiguousarray(source.data.transpose(0, 3, 1, 2)))  # HWC -> CHW
        labels = torch.as_tensor(source.targets, dtype=torch.int64)
        super().__init__(images, labels, num_classes=10, split=split, flip=flip, as_uint8=as_uint8)
