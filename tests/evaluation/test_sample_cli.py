"""sample.py end to end on a unet_tiny model trained for 2 steps by train.py inside the test session."""
from __future__ import annotations

import json

import numpy as np
import pytest

from diffusion.samplers import SAMPLERS

# few steps, loose ODE tolerances: these check the plumbing, not the samplers (tests/samplers/ does that)
FAST = {"ode": ["sampler.rtol=1e-2", "sampler.atol=1e-2"], "pc": ["sampler.corrector_steps=1"]}


def _npz(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler(cli, ddpm_run, tmp_path, sampler):
    out = tmp_path / sampler
    code, stdout, stderr = cli("sample", f"ckpt={ddpm_run}", f"sampler={sampler}", "sampler.steps=3", "n=3",
                               f"out={out}", *FAST.get(sampler, []))
    assert code == 0, stderr
    images = _npz(out / "samples.npz")
    assert set(images) == {"arr_0"}  # unconditional: no labels
    assert images["arr_0"].shape == (3, 28, 28, 1) and images["arr_0"].dtype == np.uint8
    assert (out / "grid.png").stat().st_size > 100
    assert "NFE" in stdout and "images/s" in stdout and f"with {sampler}, 3 steps" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sampler"] == sampler and manifest["steps"] == 3 and manifest["ema"] is True


def test_same_seed_same_images_and_resume(cli, ddpm_run, tmp_path):
    args = [f"ckpt={ddpm_run}", "sampler=ddim", "sampler.steps=2", "sampler.eta=1.0", "n=5", "batch_size=2"]
    assert cli("sample", *args, f"out={tmp_path / 'a'}")[0] == 0
    first = _npz(tmp_path / "a" / "samples.npz")["arr_0"]
    # rerunning the finished command samples nothing; a lost batch is redone, identically
    code, stdout, _ = cli("sample", *args, f"out={tmp_path / 'a'}")
    assert code == 0 and "nothing to sample" in stdout
    (tmp_path / "a" / "batches" / "batch_000001.npz").unlink()
    code, stdout, _ = cli("sample", *args, f"out={tmp_path / 'a'}")
    assert code == 0 and "2 of 3 batches resumed" in stdout
    assert np.array_equal(_npz(tmp_path / "a" / "samples.npz")["arr_0"], first)
    # the same command elsewhere gives the same images; another seed others
    assert cli("sample", *args, f"out={tmp_path / 'b'}")[0] == 0
    assert np.array_equal(_npz(tmp_path / "b" / "samples.npz")["arr_0"], first)
    assert cli("sample", *args, "seed=1", f"out={tmp_path / 'c'}")[0] == 0
    assert not np.array_equal(_npz(tmp_path / "c" / "samples.npz")["arr_0"], first)
    # other settings into a folder that holds samples: refused, not mixed
    code, _, stderr = cli("sample", *args, "seed=1", f"out={tmp_path / 'a'}")
    assert code == 2 and "seed differ" in stderr


def test_raw_weights_and_default_out(cli, ddpm_run):
    code, stdout, stderr = cli("sample", f"ckpt={ddpm_run}", "ema=false", "sampler.steps=2", "n=2", "grid=0")
    assert code == 0, stderr
    out = ddpm_run / "samples" / "ddim_2_seed0_raw"
    assert (out / "samples.npz").is_file() and not (out / "grid.png").exists()
    assert "raw weights" in stdout


def test_class_conditional_with_guidance(cli, conditional_run, tmp_path):
    code, stdout, stderr = cli("sample", f"ckpt={conditional_run}", "sampler.steps=2", "n=5", "class_labels=[3,4]",
                               "guidance_scale=2.0", f"out={tmp_path / 'g'}")
    assert code == 0, stderr
    saved = _npz(tmp_path / "g" / "samples.npz")
    assert saved["arr_0"].shape == (5, 28, 28, 1) and saved["arr_1"].tolist() == [3, 4, 3, 4, 3]
    assert "NFE 2 per sample" in stdout  # the guided pair is one doubled batch: one evaluation per step
    # by default the classes are cycled, so any n covers them evenly
    assert cli("sample", f"ckpt={conditional_run}", "sampler.steps=1", "n=12", f"out={tmp_path / 'c'}")[0] == 0
    assert _npz(tmp_path / "c" / "samples.npz")["arr_1"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    code, _, stderr = cli("sample", f"ckpt={conditional_run}", "class_labels=[12]", f"out={tmp_path / 'bad'}")
    assert code == 2 and "class label 12 is outside 0..9" in _one_error_line(stderr)
    assert not (tmp_path / "bad").exists()


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("sample.py: error: ")
    return lines[0]


@pytest.mark.parametrize("case,message", [
    ("missing", "no checkpoint at"), ("truncated", "truncated or corrupt"), ("corrupt", "truncated or corrupt"),
    ("foreign", "not a diffusion checkpoint"), ("pickle", "would run code"),
])
def test_bad_checkpoints_are_one_line_errors(cli, bad_checkpoints, tmp_path, case, message):
    code, _, stderr = cli("sample", f"ckpt={bad_checkpoints[case]}", "n=2", f"out={tmp_path / 'out'}")
    assert code == 2
    assert message in _one_error_line(stderr)
    assert not bad_checkpoints["marker"].exists()  # the pickle's code never ran
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,message", [
    (["sampler=ddpm"], "sampler 'ddpm' cannot run on VPSDE"),
    (["sampler=nope"], "Could not find 'sampler/nope'"),
    (["sampler.foo=1"], "Key 'foo' not in 'ddim_sampler'"),
    (["+sampler.foo=1"], "unknown option(s) foo for sampler 'ddim'"),
    (["nn=3"], "Key 'nn' not in 'SampleConfig'"),
    (["steps=5"], "Key 'steps' not in 'SampleConfig' (did you mean sampler.steps?)"),   # a config group's key
    (["n=abc"], "could not be converted to Integer"),
    (["guidance_scale=2.0"], "needs a class-conditional model"),
    (["class_labels=[1]"], "model is unconditional"),
    (["sampler=unipc", "sampler.order=7"], "order must be 1, 2 or 3, got 7"),  # a value the sampler checks itself
    (["sampler=ipndm", "+sampler.timesteps=[2.0,0.5,0.1]"], "timesteps must lie in"),
    (["n=0"], "n=0"),
])
def test_bad_requests_are_one_line_errors(cli, vp_run, tmp_path, args, message):
    code, stdout, stderr = cli("sample", f"ckpt={vp_run}", "n=2", "sampler.steps=2", f"out={tmp_path / 'out'}", *args)
    assert code == 2
    assert message in _one_error_line(stderr)
    assert stdout == "" and not (tmp_path / "out").exists()  # refused before the header, the bar or a folder


def test_command_line_pickle_refused_and_nothing_in_cwd(cli, bad_checkpoints, ddpm_run, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = cli.subprocess("sample", f"ckpt={bad_checkpoints['pickle']}", "n=2", cwd=cwd)
    assert done.returncode == 2 and "would run code" in _one_error_line(done.stderr)
    assert not bad_checkpoints["marker"].exists()
    done = cli.subprocess("sample", f"ckpt={ddpm_run}", "sampler.steps=2", "n=2", f"out={tmp_path / 'out'}", cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "samples.npz").is_file()
    assert list(cwd.iterdir()) == []  # no outputs/, .hydra/ or log file from Hydra
