"""MNIST and CIFAR-10 in torchvision's on-disk formats, preloaded into memory.

torchvision finds, downloads and parses the files; we keep its uint8 arrays as one tensor and
skip its per-item PIL round trip (see `InMemoryImages`). Every failure a user can fix becomes a
one-line `DataError` that names the command to run.
"""
from __future__ import annotations

import os
import pickle

import numpy as np

import torch

from diffusion.buildable import buildable

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


@buildable
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


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain data and numpy arrays, and refuses every other global: a CIFAR-10 batch is a pickle, and
    an ordinary ``pickle.load`` (torchvision's) would run whatever code a tampered batch file names."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # protocol 2 stores bytes as _codecs.encode(text, "latin1")

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")


def read_cifar_batch(path: str) -> tuple[np.ndarray, list[int]]:
    """Images (N, 32, 32, 3) uint8 and labels of one ``cifar-10-batches-py`` file, unpickled without running code."""
    with open(path, "rb") as f:
        entry = _ArraysOnly(f, encoding="latin1").load()
    data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return data, [int(label) for label in entry["labels"]]


def _download_cifar10(root: str) -> None:
    """torchvision's download: the archive from its URL, checked against its md5, unpacked under root."""
    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    source = TorchvisionCIFAR10
    download_and_extract_archive(source.url, root, filename=source.filename, md5=source.tgz_md5)


@buildable
class CIFAR10(InMemoryImages):
    """CIFAR-10 (50,000 train / 10,000 test, 32x32, 3 channels, 10 classes) via torchvision.

    Reads the python pickle batches `root/cifar-10-batches-py/{data_batch_1..5, test_batch}` with an unpickler
    that admits numpy arrays and plain data only (``read_cifar_batch``): a tampered batch cannot run code.
    ``download=True`` fetches torchvision's archive and checks its md5.

    Args:
        flip: random horizontal flips on the train split (the usual CIFAR-10 augmentation, Ho et al. 2020).
    """

    name = "cifar10"

    def __init__(
        self, root: str = "data/cifar10", split: str = "train", download: bool = False, as_uint8: bool = False, flip: bool = True
    ) -> None:
        check_split(self.name, split)
        root = os.fspath(root)
        where = os.path.join(root, "cifar-10-batches-py")
        names = [f"data_batch_{k}" for k in range(1, 6)] if split == "train" else ["test_batch"]
        if download and not all(os.path.isfile(os.path.join(where, n)) for n in names):
            _load(lambda: _download_cifar10(root), "CIFAR-10", "cifar10", root, download, where)
        batches = []
        for name in names:
            path = os.path.join(where, name)
            if not os.path.isfile(path):
                raise DataError(f"CIFAR-10 not found under {root} ({path} is missing): run python train.py "
                                f"data=cifar10 data.download=true (or put the torchvision CIFAR-10 files under {where})") from None
            try:
                batches.append(read_cifar_batch(path))
            except pickle.UnpicklingError as error:
                if "Unsupported global" in str(error):
                    raise DataError(f"{path} is a pickle that would run code ({str(error).split()[-1]}), not a CIFAR-10 "
                                    "batch; nothing was run: delete the folder and re-download") from None
                raise DataError(f"CIFAR-10 files under {where} are corrupt ({_one_line(error)}): delete them and "
                                "run python train.py data=cifar10 data.download=true") from None
            except _CORRUPT as error:
                raise DataError(f"CIFAR-10 files under {where} are corrupt ({_one_line(error)}): delete them and "
                                "run python train.py data=cifar10 data.download=true") from None
        data = np.concatenate([images for images, _ in batches])
        targets = [label for _, labels in batches for label in labels]
        if data.shape[1:] != (32, 32, 3) or len(targets) != len(data):
            raise DataError(f"CIFAR-10 files under {where} are corrupt (unexpected shapes): delete them and re-download")
        images = torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))  # HWC -> CHW
        labels = torch.as_tensor(targets, dtype=torch.int64)
        super().__init__(images, labels, num_classes=10, split=split, flip=flip, as_uint8=as_uint8)
