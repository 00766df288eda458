"""Samples on disk: uint8 conversion, npz/folder round trips, PNG grids and the resumable batch store."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.runs.store import BatchStore, load_images, read_manifest, save_grid, save_npz, save_uint8_grid, to_uint8


def test_to_uint8_inverts_the_data_scaling():
    u = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    x = u.float() / 127.5 - 1  # diffusion.data's mapping
    assert torch.equal(to_uint8(x), u)
    assert torch.equal(to_uint8(torch.tensor([[[[-3.0, 3.0]]]])), torch.tensor([[[[0, 255]]]], dtype=torch.uint8))


def test_npz_holds_nhwc_uint8_and_labels(tmp_path):
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    save_npz(tmp_path / "s.npz", images.permute(0, 2, 3, 1).numpy(), np.arange(5))
    with np.load(tmp_path / "s.npz") as f:  # the guided-diffusion layout FID tools read
        assert f["arr_0"].shape == (5, 8, 8, 3) and f["arr_0"].dtype == np.uint8
        assert f["arr_1"].tolist() == [0, 1, 2, 3, 4]
    back, labels = load_images(tmp_path / "s.npz")
    assert torch.equal(back, images) and labels.tolist() == [0, 1, 2, 3, 4]


def test_folder_of_pngs_loads_in_name_order(tmp_path):
    images = torch.randint(0, 256, (3, 1, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for i, im in enumerate(images):
        Image.fromarray(im[0].numpy()).save(tmp_path / f"{i:03d}.png")
    back, labels = load_images(tmp_path)
    assert torch.equal(back, images) and labels is None


def test_bad_sample_paths_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="no samples at"):
        load_images(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_images(tmp_path / "bad.npz")
    np.savez(tmp_path / "float.npz", np.zeros((2, 4, 4, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        load_images(tmp_path / "float.npz")


def test_grid_png(tmp_path):
    images = torch.full((6, 1, 4, 4), 7, dtype=torch.uint8)
    path = save_grid(images, tmp_path / "g.png")
    with Image.open(path) as im:
        grid = np.asarray(im)
    # 3 columns x 2 rows of 4x4 tiles with 2-pixel white padding
    assert grid.shape == (2 * 4 + 3 * 2, 3 * 4 + 4 * 2)
    assert (grid == 7).sum() == 6 * 16
    assert not list(tmp_path.glob(".*.tmp"))


def test_grid_png_old_name_is_an_alias_and_floats_are_refused(tmp_path):
    assert save_grid is save_uint8_grid
    with pytest.raises(ValueError, match="uint8 images"):  # floats in [-1, 1] are training.logging's grids
        save_uint8_grid(torch.zeros(2, 1, 4, 4), tmp_path / "f.png")


def test_batch_store_refuses_other_settings(tmp_path):
    store = BatchStore(tmp_path, {"sampler": "ddim", "seed": 0}).open()
    store.write(0, torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    assert store.count(0) == 2 and store.count(1) == 0
    BatchStore(tmp_path, {"sampler": "ddim", "seed": 0}).open()  # the same settings resume
    with pytest.raises(ValueError, match="seed differ"):
        BatchStore(tmp_path, {"sampler": "ddim", "seed": 1}).open()
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"sampler": "ddim", "seed": 0}
    assert read_manifest(tmp_path) == {"sampler": "ddim", "seed": 0}  # the reader the benchmarks label rows with


def test_batch_store_gathers_in_order_and_redoes_damaged_batches(tmp_path):
    store = BatchStore(tmp_path, {}).open()
    for i in range(3):
        store.write(i, torch.full((2, 1, 2, 2), i, dtype=torch.uint8), torch.tensor([i, i]))
    store.path(1).write_bytes(b"half a file")  # a damaged batch counts as missing
    assert store.count(1) == 0
    with pytest.raises(ValueError, match="missing"):
        store.gather(3)
    store.write(1, torch.full((2, 1, 2, 2), 1, dtype=torch.uint8), torch.tensor([1, 1]))
    path, images, labels = store.gather(3)
    assert images[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2] and labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(load_images(path)[0], images)
