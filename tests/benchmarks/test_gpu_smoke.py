"""benchmarks/gpu.py in --smoke mode on a CPU: the script a lent GPU will run must not first break on that day.
The fast test runs the step table, sampling throughput, the scoring and the record in-process (tiny sizes); the
slow one also runs both few-minute trainings (a few steps each) through train.py and sample.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def test_smoke_without_trainings_writes_every_table_and_scores(tmp_path, bench_script):
    gpu = bench_script("gpu.py")
    record = gpu.RECORD.read_text() if gpu.RECORD.is_file() else None
    results = gpu.main(["--smoke", "--no-train", "--out", str(tmp_path)])
    steps = results["steps"]
    # fp32, tf32 and bf16, each with and without channels_last, ours and diffusers' (compile: GPU only)
    assert len(steps) == 12 and {r["model"] for r in steps} == {"ours", "theirs"}
    assert all(r["step_s"] > 0 and np.isfinite(r["loss"]) and not r["compile"] for r in steps), steps
    ours = [r for r in steps if r["model"] == "ours"]
    theirs = [r for r in steps if r["model"] == "theirs"]
    assert abs(ours[0]["params"] - theirs[0]["params"]) / ours[0]["params"] < 0.01  # the same architecture
    assert [r["precision"] for r in results["sampling"]] == ["fp32", "tf32", "bf16", "bf16"]
    assert all(r["evaluations_per_s"] > 0 for r in results["sampling"])
    text = (tmp_path / "gpu.md").read_text()
    assert "SMOKE" in text and "### Training step, batch 4" in text and "### Sampling throughput" in text
    assert (gpu.RECORD.read_text() if gpu.RECORD.is_file() else None) == record  # smoke never touches the record

    # --score: samples of pure noise score far above the floor of real images (the same code as the GPU run's)
    data = tmp_path / "real_small" if (tmp_path / "real_small").is_dir() else tmp_path / "synthetic"
    noise = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "noise_samples.npz", arr_0=noise)
    results["runs"] = [{"experiment": "noise", "steps": 0, "batch": 4, "precision": "fp32", "train_wall_s": 0.0,
                        "sampler": "none", "n": 16, "samples": "noise_samples.npz", "grid": "none.png"}]
    (tmp_path / "results.json").write_text(json.dumps(results))
    scored = gpu.main(["--smoke", "--score", str(tmp_path), "--out", str(tmp_path)])
    run, floor = scored["runs"][0], scored["floor"]
    assert floor["fid_floor_n"] == 16 and data.is_dir()
    assert run["kid"] > floor["kid_floor"] + 5 * (run["kid_std"] + floor["kid_floor_std"])
    assert run["fid"] > 2 * floor["fid_floor"]
    assert "| noise | 0 | 4 | fp32 |" in (tmp_path / "gpu.md").read_text()


@pytest.mark.slow  # four train.py / sample.py start-ups: about a minute on 2 idle cores
def test_full_smoke_runs_to_the_end(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["experiment"] for r in results["runs"]] == ["ddpm_cifar10", "rectified_flow_cifar10"]
    assert all(r["steps"] == 3 and r["kid"] is not None for r in results["runs"]), results["runs"]
    assert results["floor"]["fid_floor_n"] == 16
    assert (tmp_path / "ddpm_cifar10_grid.png").stat().st_size > 0
