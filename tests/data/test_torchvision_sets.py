"""MNIST and CIFAR-10 read from tiny files written in the real on-disk formats."""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion.data import CIFAR10, MNIST, DataError


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx-ubyte format (LeCun): magic 0x0000 08 nd, nd big-endian int32 sizes, then raw uint8."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 12, n_test: int = 5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Uncompressed files under root/MNIST/raw, the names torchvision's MNIST reads (it unpacks its .gz downloads to these)."""
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    written = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[split] = images, labels
    return written


def write_cifar10(root: Path, per_batch: int = 2, n_test: int = 3) -> dict[str, tuple[np.ndarray, list[int]]]:
    """cifar-10-batches-py: pickled dicts whose 'data' rows are 1024 red, 1024 green, 1024 blue values (row-major 32x32)."""
    rng = np.random.default_rng(1)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {"train": ([], []), "test": ([], [])}

    def batch(name: str, split: str, n: int) -> None:
        images_hwc = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        rows = images_hwc.transpose(0, 3, 1, 2).reshape(n, 3072)
        entry = {"batch_label": name, "labels": labels, "data": rows, "filenames": [f"{name}_{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        written[split][0].append(images_hwc)
        written[split][1].extend(labels)

    for k in range(1, 6):
        batch(f"data_batch_{k}", "train", per_batch)
    batch("test_batch", "test", n_test)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}))
    return {split: (np.concatenate(images), labels) for split, (images, labels) in written.items()}


def test_mnist_reads_the_idx_files(tmp_path):
    written = write_mnist(tmp_path)
    for split in ("train", "test"):
        data = MNIST(tmp_path, split=split, as_uint8=True)
        images, labels = written[split]
        assert len(data) == len(images) and (data.channels, data.image_size, data.num_classes) == (1, 28, 10)
        for i in range(len(data)):
            image, label = data[i]
            assert image.shape == (1, 28, 28) and image.dtype == torch.uint8
            assert torch.equal(image[0], torch.from_numpy(images[i])) and label == int(labels[i]) and type(label) is int
    scaled, _ = MNIST(tmp_path, split="train")[0]
    assert scaled.dtype == torch.float32 and scaled[0, 0, 0] == -1.0 and scaled[0, 0, 1] == 1.0


def test_cifar10_reads_the_pickle_batches(tmp_path):
    written = write_cifar10(tmp_path)
    for split, n in (("train", 10), ("test", 3)):
        data = CIFAR10(tmp_path, split=split, as_uint8=True, flip=False)
        images_hwc, labels = written[split]
        assert len(data) == n and (data.channels, data.image_size, data.num_classes, data.name) == (3, 32, 10, "cifar10")
        for i in range(n):
            image, label = data[i]
            # The CHW image must be the HWC picture we wrote: channel c at (y, x) is images_hwc[i, y, x, c].
            assert torch.equal(image, torch.from_numpy(images_hwc[i]).permute(2, 0, 1)) and label == labels[i]
    scaled, _ = CIFAR10(tmp_path, split="test")[1]
    assert torch.equal(scaled, torch.from_numpy(written["test"][0][1]).permute(2, 0, 1).float() / 127.5 - 1)


def test_cifar10_flips_train_only(tmp_path):
    write_cifar10(tmp_path)
    train, test = CIFAR10(tmp_path, split="train", as_uint8=True), CIFAR10(tmp_path, split="test", as_uint8=True)
    assert train.flip and not test.flip
    torch.manual_seed(0)
    stored, outcomes = train.images[0], set()
    for _ in range(40):
        image = train[0][0]
        assert torch.equal(image, stored) or torch.equal(image, stored.flip(-1))
        outcomes.add(torch.equal(image, stored))
    assert outcomes == {True, False}  # P(one orientation 40 times) = 2**-39
    assert all(torch.equal(test[i][0], test.images[i]) for i in range(len(test)))


@pytest.mark.parametrize(("cls", "config"), [(MNIST, "mnist"), (CIFAR10, "cifar10")])
def test_missing_files_give_one_line_with_the_command(tmp_path, cls, config):
    with pytest.raises(DataError) as info:
        cls(tmp_path / "nothing_here", split="train")
    message = str(info.value)
    assert "\n" not in message and "not found under" in message
    assert f"python train.py data={config} data.download=true" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained torchvision traceback


def test_failed_download_gives_one_line(tmp_path, monkeypatch):
    import torchvision

    # A mirror that cannot answer: torchvision tries it and raises its multi-line RuntimeError.
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [(tmp_path / "no_mirror").as_uri() + "/"])
    with pytest.raises(DataError, match="^downloading MNIST to .* failed") as info:
        MNIST(tmp_path / "mnist", download=True)
    assert "\n" not in str(info.value)


def test_corrupt_files_give_one_line(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x07 not an idx file")
    with pytest.raises(DataError, match="corrupt") as info:
        MNIST(tmp_path)
    assert "\n" not in str(info.value)

    write_cifar10(tmp_path / "c")
    (tmp_path / "c" / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"truncated")
    with pytest.raises(DataError, match="corrupt"):
        CIFAR10(tmp_path / "c")


def test_bad_split(tmp_path):
    with pytest.raises(DataError, match="split must be"):
        MNIST(tmp_path, split="val")
