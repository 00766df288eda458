"""evaluate.py task=export and ckpt=<diffusers folder> in sample.py / evaluate.py, end to end on unet_tiny runs
trained for 2 steps by train.py inside the test session."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")


def _one_error_line(stderr: str, script: str = "evaluate.py") -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{script}: error: ")
    return lines[0]


def test_export_run_loads_in_diffusers(cli, ddpm_run, tmp_path):
    from diffusers import DDPMPipeline

    from diffusion.runs import load_run

    out = tmp_path / "exported"
    code, stdout, stderr = cli("evaluate", f"ckpt={ddpm_run}", "task=export", f"out={out}")
    assert code == 0, stderr
    assert f"wrote {out}" in stdout and "DDPMPipeline.from_pretrained" in stdout
    pipe = DDPMPipeline.from_pretrained(out)
    assert pipe.unet.config.sample_size == 28 and pipe.scheduler.config.prediction_type == "epsilon"
    run = load_run(ddpm_run)
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for step in (0, 500, 999):
        t = torch.full((2,), float(step))
        with torch.no_grad():
            ours, theirs = run.model(x, t), pipe.unet(x, t.long()).sample
        assert (ours - theirs).abs().max().item() <= 1e-5 * ours.abs().max().item() + 1e-6
    images = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (1, 28, 28, 1) and np.isfinite(images).all()

    # the folder is a ckpt for sample.py and evaluate.py
    samples = tmp_path / "samples"
    code, stdout, stderr = cli("sample", f"ckpt={out}", "n=2", "batch_size=2", "sampler=ddim", "sampler.steps=2",
                               f"out={samples}", "grid=0")
    assert code == 0, stderr
    with np.load(samples / "samples.npz") as f:
        assert f["arr_0"].shape == (2, 28, 28, 1) and f["arr_0"].dtype == np.uint8
    code, stdout, stderr = cli("evaluate", "task=fid", f"samples={samples / 'samples.npz'}", f"ckpt={out}",
                               "data=mnist5k", "fid.inception=false", f"out={tmp_path / 'fid'}")
    assert code == 0 and "digit" in stdout.lower(), stderr
    code, _, stderr = cli("evaluate", f"ckpt={out}", "task=likelihood", "n=2", "likelihood.ode=false")
    assert code == 2 and "data=" in _one_error_line(stderr)  # a diffusers folder names no data set
    code, stdout, stderr = cli("evaluate", f"ckpt={out}", "task=likelihood", "data=mnist5k", "n=2",
                               f"out={tmp_path / 'eval'}", "likelihood.ode=false", "likelihood.t_samples=4",
                               "likelihood.sde_bound=false", "likelihood.steps=null", "likelihood.variances=[beta_tilde]")
    assert code == 0, stderr
    result = json.loads((tmp_path / "eval" / "likelihood.json").read_text())
    assert result["dims"] == 784 and all(math.isfinite(e["bits_per_dim"]) for e in result["estimates"])


def test_export_of_a_vp_run_notes_step_zero(cli, vp_run, tmp_path):
    code, stdout, stderr = cli("evaluate", f"ckpt={vp_run}", "task=export", f"out={tmp_path}")
    assert code == 0, stderr
    assert "note:" in stderr and (tmp_path / "scheduler" / "scheduler_config.json").is_file()


def test_export_needs_out(cli, ddpm_run):
    code, _, stderr = cli("evaluate", f"ckpt={ddpm_run}", "task=export")
    assert code == 2 and "out=" in _one_error_line(stderr)


def test_unsupported_folder_is_one_line_in_sample_py(cli, ddpm_run, tmp_path):
    code, _, stderr = cli("evaluate", f"ckpt={ddpm_run}", "task=export", f"out={tmp_path}")
    assert code == 0, stderr
    path = tmp_path / "unet" / "config.json"
    config = json.loads(path.read_text())
    config["time_embedding_type"] = "fourier"
    path.write_text(json.dumps(config))
    code, _, stderr = cli("sample", f"ckpt={tmp_path}", "n=1")
    assert code == 2 and "time_embedding_type='fourier'" in _one_error_line(stderr, "sample.py")
