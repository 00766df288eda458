"""sample.py task=inpaint / task=interpolate end to end on the session's unet_tiny runs (2 training steps): the
plumbing, the files and the one-line errors; the accuracy of the methods is tested in tests/conditioning/."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffusion.runs.store import save_npz


def _npz(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("sample.py: error: ")
    return lines[0]


@pytest.mark.parametrize("mask,missing", [("center", 14 * 14), ("left", 28 * 14), ("top", 14 * 28)])
@pytest.mark.parametrize("method", ["replacement", "repaint"])
def test_inpaint_test_split(cli, ddpm_run, tmp_path, mask, missing, method):
    out = tmp_path / "inp"
    code, stdout, stderr = cli("sample", f"ckpt={ddpm_run}", "task=inpaint", "images=test", f"mask={mask}", "n=3",
                               "sampler.steps=4", f"inpaint.method={method}", "inpaint.jump_length=2",
                               "inpaint.resamples=2", f"out={out}")
    assert code == 0, stderr
    saved = _npz(out / "inpaint.npz")
    assert saved["arr_0"].shape == saved["inputs"].shape == saved["masks"].shape == (3, 28, 28, 1)
    known = saved["masks"] == 255
    assert ((~known).reshape(3, -1).sum(1) == missing).all()
    assert np.array_equal(saved["arr_0"][known], saved["inputs"][known])  # known pixels returned as they were
    with Image.open(out / "inpaint.png") as im:  # 3 rows (inputs, masked, completions) of 3 images, padding 2
        assert im.size == (3 * 30 + 2, 3 * 30 + 2)
    assert f"with {method}, ddim, 4 steps" in stdout


def test_inpaint_npz_folder_png_mask_and_random(cli, ddpm_run, tmp_path):
    g = np.random.default_rng(0)
    images = g.integers(0, 256, (20, 28, 28, 1), dtype=np.uint8)
    save_npz(tmp_path / "in.npz", images)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(images[i, ..., 0]).save(folder / f"{i}.png")
    mask = np.zeros((28, 28), dtype=np.uint8)
    mask[20:] = 255  # fill in the bottom 8 rows
    Image.fromarray(mask).save(tmp_path / "mask.png")
    code, _, stderr = cli("sample", f"ckpt={ddpm_run}", "task=inpaint", f"images={tmp_path / 'in.npz'}", "n=20",
                          f"mask={tmp_path / 'mask.png'}", "sampler.steps=2", f"out={tmp_path / 'a'}")
    assert code == 0, stderr
    saved = _npz(tmp_path / "a" / "inpaint.npz")
    assert np.array_equal(saved["inputs"], images) and (saved["masks"][:, 20:] == 0).all() and (saved["masks"][:, :20] == 255).all()
    with Image.open(tmp_path / "a" / "inpaint.png") as im:  # 20 images: two blocks of 16 columns x 3 rows
        assert im.size == (16 * 30 + 2, 6 * 30 + 2)
    code, _, stderr = cli("sample", f"ckpt={ddpm_run}", "task=inpaint", f"images={folder}", "mask=random:0.5",
                          "sampler=ddpm", "sampler.steps=3", f"out={tmp_path / 'b'}")
    assert code == 0, stderr
    saved = _npz(tmp_path / "b" / "inpaint.npz")
    missing = (saved["masks"] == 0).mean()
    assert saved["arr_0"].shape == (2, 28, 28, 1) and 0.4 < missing < 0.6


def test_interpolate(cli, vp_run, tmp_path):
    code, stdout, stderr = cli("sample", f"ckpt={vp_run}", "task=interpolate", "interpolate.frames=4",
                               "interpolate.pair=[1,2]", "interpolate.rtol=1e-3", "interpolate.atol=1e-3",
                               f"out={tmp_path}")
    assert code == 0, stderr
    strip = _npz(tmp_path / "interpolate.npz")["arr_0"]
    assert strip.shape == (6, 28, 28, 1)
    with Image.open(tmp_path / "interpolate.png") as im:
        assert im.size == (6 * 30 + 2, 32)
    assert "interpolating images 1 and 2" in stdout


@pytest.mark.parametrize("args,message", [
    (["mask=diagonal"], "unknown mask 'diagonal'"),
    (["mask=random:1.5"], "random:<p> with 0 < p < 1"),
    (["mask=nothere.png"], "no mask image at nothere.png"),
    (["mask=BADPNG"], "but the images are 28x28: resize the mask"),
    (["images=nowhere.npz"], "no images at nowhere.npz"),
    (["images=RGB"], "are 3x28x28 (channels x height x width) but the model makes 1x28x28"),
    (["images=SMALL"], "are 1x16x16 (channels x height x width) but the model makes 1x28x28"),
    (["inpaint.method=paint"], "unknown inpainting method 'paint'"),
    (["sampler=ode", "inpaint.method=repaint"], "does not walk one fixed time grid"),
    (["task=interpolate", "interpolate.pair=[0,99999]"], "give two indices into the"),
    (["task=paint"], "task"),
    (["sampler=fewstep"], "timesteps=fitted (a grid fitted to the run) is resolved by sample.py's task=sample alone"),
])
def test_bad_requests_are_one_line_errors(cli, ddpm_run, tmp_path, args, message):
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(tmp_path / "bad.png")
    save_npz(tmp_path / "rgb.npz", np.zeros((2, 28, 28, 3), dtype=np.uint8))
    save_npz(tmp_path / "small.npz", np.zeros((2, 16, 16, 1), dtype=np.uint8))
    subst = {"BADPNG": str(tmp_path / "bad.png"), "RGB": str(tmp_path / "rgb.npz"), "SMALL": str(tmp_path / "small.npz")}
    args = [a.replace(k, v) for a in args for k, v in [next(((k, v) for k, v in subst.items() if k in a), ("", ""))]]
    code, _, stderr = cli("sample", f"ckpt={ddpm_run}", "task=inpaint", "n=2", "sampler.steps=2",
                          f"out={tmp_path / 'out'}", *args)
    assert code == 2
    line = _one_error_line(stderr)
    assert message in line, line
    assert not (tmp_path / "out").exists()
