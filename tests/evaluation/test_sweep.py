"""The sweep: one row per (sampler, steps) with NFE, time and scores; a Markdown table and a PNG plot."""
from __future__ import annotations

import json

import pytest
import torch

from diffusion.evaluation.sweep import markdown_table, run_sweep, save_sweep
from diffusion.processes import VPSDE
from diffusion.toy import GaussianMixture


def test_rows_table_and_plot(tmp_path):
    mixture = GaussianMixture.random(4, k=2, spread=0.5, scale=(0.05, 0.2), seed=0)
    process = VPSDE()
    reference = mixture.sample(256, torch.Generator().manual_seed(0)).float()

    def quality(images):  # squared distance of the sample mean to the true mean, in pixel units
        x = images.float().flatten(1) / 127.5 - 1
        return {"fid": None, "digit_fd": float(((x.mean(0) - reference.mean(0)) ** 2).sum())}

    rows = run_sweep(process, mixture.eps_model(process), (1, 2, 2), {"ddim": {"name": "ddim", "steps": 99, "eta": 0.0},
                     "dpmpp_2m": {}}, [2, 8], n=64, batch_size=32, quality=quality, grid_dir=tmp_path, log=lambda m: None)
    assert [(r["sampler"], r["steps"], r["nfe"]) for r in rows] == [("ddim", 2, 2), ("ddim", 8, 8), ("dpmpp_2m", 2, 2), ("dpmpp_2m", 8, 8)]
    assert all(r["seconds"] > 0 and r["fid"] is None and r["digit_fd"] >= 0 for r in rows)
    files = save_sweep(rows, tmp_path, notes=["FID unavailable: offline"])
    md = files["md"].read_text()
    assert "| ddim | 8 | 8 |" in md and "n/a" in md and "- FID unavailable: offline" in md
    assert json.loads(files["json"].read_text())["rows"][0]["sampler"] == "ddim"
    assert files["png"].stat().st_size > 1000 and (tmp_path / "dpmpp_2m_8.png").exists()
    assert markdown_table(rows).count("\n| ") == 1 + len(rows)  # header and one line per row (after the separator)


def test_plot_without_any_score(tmp_path):
    rows = [{"sampler": "ddim", "steps": s, "nfe": s, "seconds": 1.0, "images_per_second": 10.0 * s, "n": 4,
             "fid": None, "digit_fd": None} for s in (1, 2)]
    assert save_sweep(rows, tmp_path)["png"].stat().st_size > 1000


def test_samplers_are_checked_before_anything_runs():
    def never(x, t):
        raise AssertionError("the model ran")

    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        run_sweep(VPSDE(), never, (1, 4, 4), {"ddim": {}, "nope": {}}, [1], n=1)
    with pytest.raises(ValueError, match="cannot run on VPSDE"):
        run_sweep(VPSDE(), never, (1, 4, 4), {"ddim": {}, "ddpm": {}}, [1], n=1)