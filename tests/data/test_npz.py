"""data=npz: any .npz of uint8 NHWC images as a training set, checked on the real shared CIFAR-10 arrays (value
range, channel order, flips, labels; what synthetic arrays cannot show) and on small synthetic files (keys, errors)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from diffusion.data import DataError, NpzImages, describe, make_loader

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "cifar10"
TRAIN, TEST = SHARED / "train10k.npz", SHARED / "test1k.npz"
real = pytest.mark.skipif(not TRAIN.is_file() or not TEST.is_file(),
                          reason=f"the real CIFAR-10 arrays are not at {SHARED} (they come with the project's shared "
                                 "folder, not with a clone)")


@pytest.fixture(scope="module")
def cifar():
    return NpzImages(str(TRAIN), test_path=str(TEST), flip=False)


@real
def test_real_images_shape_labels_and_range(cifar):
    assert len(cifar) == 10_000 and describe(cifar) == {"channels": 3, "image_size": 32, "num_classes": 10}
    # the first ten training labels of CIFAR-10's data_batch_1
    assert cifar.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert torch.bincount(cifar.labels).tolist() == [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]
    images, labels = make_loader(cifar, batch_size=500, shuffle=False).__iter__().__next__()
    assert images.shape == (500, 3, 32, 32) and images.dtype == torch.float32
    # real photos use the whole range: 0 -> -1 and 255 -> 1 exactly, nothing outside
    assert images.min() == -1.0 and images.max() == 1.0
    assert labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]


@real
def test_real_images_channel_order_is_rgb_nchw(cifar):
    images, _ = make_loader(cifar, batch_size=10, shuffle=False).__iter__().__next__()
    # image 0 (a frog), row 28, column 1: RGB (201, 150, 22), a saturated yellow-brown; channels first in the batch
    assert torch.equal(images[0, :, 28, 1], torch.tensor([201, 150, 22]) / 127.5 - 1)
    # per-channel means of the first 10,000 training images, close to CIFAR-10's published
    # 125.3 / 123.0 / 113.9 (R, G, B): a BGR or channels-last mix-up would swap or scramble them
    means = cifar.images.double().mean((0, 2, 3))
    assert torch.allclose(means, torch.tensor([125.3, 123.0, 113.9], dtype=torch.float64), atol=2.0), means
    assert means[0] - means[2] > 8


@real
def test_real_images_flip_horizontally_on_the_train_split_only():
    flipping = NpzImages(str(TRAIN), test_path=str(TEST), flip=True, as_uint8=True)
    batch, _ = next(iter(make_loader(flipping, batch_size=200, shuffle=False, seed=3)))
    stored = flipping.images[:200]
    same = (batch == stored).flatten(1).all(1)
    mirrored = (batch == stored.flip(-1)).flatten(1).all(1)
    # every image is itself or its left-right mirror (never upside down), and real photos are never symmetric
    assert bool((same ^ mirrored).all())
    assert 70 <= int(mirrored.sum()) <= 130  # Binomial(200, 1/2): outside 70..130 with p < 3e-5
    test = NpzImages(str(TRAIN), test_path=str(TEST), split="test", flip=True, as_uint8=True)
    assert len(test) == 1000 and not test.flip and torch.equal(test[0][0], test.images[0])


@real
def test_train_py_trains_a_few_steps_on_the_real_images(tmp_path):
    run = tmp_path / "run"
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "model=unet_tiny", "trainer=smoke", "trainer.progress=false",
         "sampler.steps=2", "data=npz", f"data.path={TRAIN}", f"data.test_path={TEST}", "model.num_classes=10",
         f"hydra.run.dir={run}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "samples" / "step_4.png").stat().st_size > 0
    state = torch.load(run / "checkpoints" / "ckpt_4.pt", weights_only=True)
    assert state["step"] == 4
    saved = (run / "config.yaml").read_text()
    assert "diffusion.data.NpzImages" in saved and "num_classes: 10" in saved


# ---- synthetic files: keys and one-line errors ----------------------------------------------------------------------

def _save(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_arr_0_arr_1_as_sample_py_writes(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    path = _save(tmp_path / "s.npz", arr_0=images, arr_1=np.array([0, 1, 2, 0, 1, 2]))
    data = NpzImages(path, flip=False, as_uint8=True)
    assert data.num_classes == 3 and data[4][1] == 1
    assert torch.equal(data[2][0], torch.from_numpy(images[2]).permute(2, 0, 1))
    unlabelled = NpzImages(_save(tmp_path / "u.npz", images=images[..., :1]), flip=False)
    assert unlabelled.num_classes is None and unlabelled[0][1] == -1 and unlabelled.channels == 1


def test_npz_config_builds_with_a_path(tmp_path):
    cfg = OmegaConf.load(REPO / "configs" / "data" / "npz.yaml")
    cfg.path = _save(tmp_path / "a.npz", images=np.zeros((3, 4, 4, 3), np.uint8))
    data = hydra.utils.instantiate(cfg)
    assert isinstance(data, NpzImages) and data.flip and data[0][0].shape == (3, 4, 4)


@pytest.mark.parametrize("arrays, says", [
    (None, "does not exist: set data.path="),
    ({"images": np.zeros((2, 4, 4, 3), np.float32)}, "images must be uint8 (0-255), got float32"),
    ({"images": np.zeros((2, 3, 4, 4), np.uint8)}, "channels last), got shape (2, 3, 4, 4)"),
    ({"images": np.zeros((2, 4, 4), np.uint8)}, "got shape (2, 4, 4)"),
    ({"images": np.zeros((2, 4, 6, 3), np.uint8)}, "must be square"),
    ({"images": np.zeros((3, 4, 4, 3), np.uint8), "labels": np.array([0, 1])}, "2 labels (shape (2,)) for 3 images"),
    ({"images": np.zeros((2, 4, 4, 3), np.uint8), "labels": np.array([0.5, 1.0])}, "labels must be integers"),
    ({"pixels": np.zeros((2, 4, 4, 3), np.uint8)}, "holds no 'images' or 'arr_0' array (keys: pixels)"),
    ({"images": np.array([object()] * 2, dtype=object)}, "not a readable .npz"),
])
def test_errors_are_one_line(tmp_path, arrays, says):
    path = str(tmp_path / "missing.npz") if arrays is None else _save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as error:
        NpzImages(path)
    message = str(error.value)
    assert says in message and "\n" not in message, message


def test_not_a_zip_and_labels_beyond_num_classes(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="not a readable .npz"):
        NpzImages(str(tmp_path / "junk.npz"))
    path = _save(tmp_path / "l.npz", images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.array([0, 5]))
    with pytest.raises(DataError, match=r"label 5 is outside 0..2"):
        NpzImages(path, num_classes=3)


@pytest.mark.slow  # the same one line is checked in-process above
def test_train_py_missing_file_is_one_line(tmp_path):
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "model=unet_tiny", "trainer=smoke", "data=npz",
                           f"data.path={tmp_path / 'nope.npz'}", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "nope.npz does not exist: set data.path=" in lines[0]
