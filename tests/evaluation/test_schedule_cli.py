"""``evaluate.py task=schedule`` writes a GITS grid that ``sample.py sampler.timesteps=<file>`` uses."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def test_schedule_then_sample(cli, vp_run, tmp_path):
    code, stdout, stderr = cli("evaluate", f"ckpt={vp_run}", "task=schedule", "sampler=ipndm", "steps=3", "n=4",
                               "schedule.refine=0", "schedule.fine_steps=30")
    assert code == 0, stderr
    path = vp_run / "eval" / "schedules" / "ipndm_3.json"
    saved = json.loads(path.read_text())
    times = saved["timesteps"]
    assert saved["sampler"] == "ipndm" and saved["steps"] == 3 and len(times) == 4 and str(path) in stdout
    assert times[0] == 1.0 and times[-1] == 1e-3 and all(b < a for a, b in zip(times, times[1:]))
    assert saved["fit_nfe"] == 30  # the fine reference only (no refinement)
    code, stdout, stderr = cli("sample", f"ckpt={vp_run}", "sampler=ipndm", f"sampler.timesteps={path}", "n=2",
                               "batch_size=2", f"out={tmp_path / 's'}", "grid=0")
    assert code == 0, stderr
    assert "NFE 3 per sample" in stdout


def test_refined_schedule(cli, vp_run, tmp_path):
    code, _, stderr = cli("evaluate", f"ckpt={vp_run}", "task=schedule", "sampler=unipc", "steps=4", "n=4",
                          "schedule.fine_steps=20", "schedule.refine=1", "sampler.order=2", f"out={tmp_path}")
    assert code == 0, stderr
    saved = json.loads((tmp_path / "schedules" / "unipc_4.json").read_text())
    assert len(saved["timesteps"]) == 5 and saved["options"]["order"] == 2 and saved["refine"] == 1
    assert saved["fit_nfe"] > 20  # the refinement's sampler runs, 4 calls each


def test_bad_schedule_file_is_one_line(cli, vp_run, tmp_path):
    code, _, stderr = cli("sample", f"ckpt={vp_run}", "sampler=ipndm", f"sampler.timesteps={tmp_path / 'none.json'}",
                          "n=2", "batch_size=2", f"out={tmp_path / 's'}", "grid=0")
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "task=schedule" in stderr, stderr


@pytest.mark.slow
def test_sweep_runs_fitted_grids_beside_the_fixed_ones(cli, vp_run, tmp_path):
    """sweep.fitted=true: each (sampler, steps) also walks the grid task=schedule fits (fitted once into
    <out>/schedules/<sampler>_<steps>.json, read back on the next sweep), in a row named '<sampler> fitted'."""
    args = ("evaluate", f"ckpt={vp_run}", "task=sweep", "sweep.samplers=[ipndm]", "sweep.steps=[3]", "n=4",
            "batch_size=4", "sweep.fitted=true", "schedule.refine=0", "schedule.fine_steps=20", "schedule.n=16",
            f"out={tmp_path}",
            "fid.inception=false", "fid.digit_fd=false")
    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    rows = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["rows"]
    assert [(r["sampler"], r["steps"], r["nfe"]) for r in rows] == [("ipndm", 3, 3), ("ipndm fitted", 3, 3)]
    fitted = tmp_path / "schedules" / "ipndm_3.json"
    assert "fitting a 3-step grid for ipndm" in stderr and fitted.exists()
    assert (tmp_path / "sweep" / "ipndm_fitted_3.png").exists()
    stamp = fitted.stat().st_mtime_ns
    code, _, stderr = cli(*args)
    assert code == 0 and "fitting" not in stderr and fitted.stat().st_mtime_ns == stamp   # reused, not refitted
    # other settings (here the refinement) never reuse that grid: their fit goes beside it, under a hashed name
    other = tuple(a if a != "schedule.refine=0" else "schedule.refine=1" for a in args)
    code, _, stderr = cli(*other)
    assert code == 0 and "fitting a 3-step grid for ipndm" in stderr and fitted.stat().st_mtime_ns == stamp, stderr
    beside = sorted(p.name for p in (tmp_path / "schedules").glob("ipndm_3_*.json"))
    assert len(beside) == 1 and json.loads((tmp_path / "schedules" / beside[0]).read_text())["refine"] == 1
    code, _, stderr = cli(*other)
    assert code == 0 and "fitting" not in stderr, stderr


def test_fewstep_fits_the_runs_grid_on_first_use(cli, vp_run, tmp_path):
    """sampler=fewstep has timesteps=fitted: sample.py fits UniPC-3's grid to the run on first use (with schedule.*),
    keeps it in <run>/eval/schedules/unipc_<NFE>.json (or beside it, if one fitted otherwise is there), walks it
    (NFE = steps) and reuses it on the next call: the same images, no second fit; its samples go to
    <run>/samples/unipc_<NFE>_fitted_seed<seed>."""
    args = ("sample", f"ckpt={vp_run}", "sampler=fewstep", "sampler.steps=3", "n=2", "batch_size=2", "grid=0",
            "schedule.fine_steps=20", "schedule.refine=1", "schedule.n=16")
    code, stdout, stderr = cli(*args, f"out={tmp_path / 'a'}")
    assert code == 0, stderr
    assert "fitting a 3-step grid for unipc" in stderr and "NFE 3 per sample" in stdout, stderr
    grid = Path(json.loads((tmp_path / "a" / "manifest.json").read_text())["options"]["timesteps"])
    assert grid.parent == vp_run / "eval" / "schedules" and grid.name.startswith("unipc_3")
    saved = json.loads(grid.read_text())
    assert saved["options"]["order"] == 3 and saved["refine"] == 1 and len(saved["timesteps"]) == 4
    assert saved["ema"] is True and Path(saved["checkpoint"]).parent == vp_run / "checkpoints"
    code, stdout, stderr = cli(*args, f"out={tmp_path / 'b'}")
    assert code == 0 and "fitting" not in stderr, stderr
    first, again = (np.load(tmp_path / d / "samples.npz")["arr_0"] for d in "ab")
    assert np.array_equal(first, again)
    # another model (here the raw weights instead of the EMA) gets a grid of its own, beside the first
    code, stdout, stderr = cli(*args, "ema=false", f"out={tmp_path / 'c'}")
    assert code == 0 and "fitting a 3-step grid for unipc" in stderr, stderr
    raw = Path(json.loads((tmp_path / "c" / "manifest.json").read_text())["options"]["timesteps"])
    assert raw != grid and json.loads(raw.read_text())["ema"] is False and json.loads(grid.read_text()) == saved
    # without out=, the samples are named after the walk: the sampler, its NFE and that the grid was fitted
    code, stdout, stderr = cli(*args)
    assert code == 0 and "fitting" not in stderr, stderr
    assert (vp_run / "samples" / "unipc_3_fitted_seed0" / "samples.npz").exists(), stdout


def test_fitted_weights_from_the_command_line(cli, vp_run, tmp_path):
    """sampler=ipndm with timesteps=fitted and coefficients=fitted: sample.py fits the grid (plain GITS: refine
    defaults to 0 with fitted weights) and iPNDM's weights on it into one schedule file, walks both and reuses
    them; task=schedule writes the same kind of file; the weights alone, without a fitted grid, are one line."""
    args = ("sample", f"ckpt={vp_run}", "sampler=ipndm", "sampler.steps=3", "sampler.timesteps=fitted",
            "sampler.coefficients=fitted", "n=2", "batch_size=2", "grid=0", "schedule.fine_steps=20", "schedule.n=16")
    code, stdout, stderr = cli(*args, f"out={tmp_path / 'a'}")
    assert code == 0 and "fitting a 3-step grid for ipndm" in stderr and "NFE 3 per sample" in stdout, stderr
    options = json.loads((tmp_path / "a" / "manifest.json").read_text())["options"]
    assert options["coefficients"] == options["timesteps"]
    saved = json.loads(Path(options["timesteps"]).read_text())
    assert saved["refine"] == 0 and saved["n"] == 16 and len(saved["coefficients"]) == 3 and len(saved["timesteps"]) == 4
    code, _, stderr = cli(*args, f"out={tmp_path / 'b'}")
    assert code == 0 and "fitting" not in stderr, stderr
    first, again = (np.load(tmp_path / d / "samples.npz")["arr_0"] for d in "ab")
    assert np.array_equal(first, again)

    code, stdout, stderr = cli("evaluate", f"ckpt={vp_run}", "task=schedule", "sampler=ipndm", "steps=3", "n=4",
                               "sampler.coefficients=fitted", "schedule.fine_steps=20", f"out={tmp_path}")
    assert code == 0 and "sampler.coefficients=" in stdout, stderr
    assert len(json.loads((tmp_path / "schedules" / "ipndm_3.json").read_text())["coefficients"]) == 3

    code, _, stderr = cli("sample", f"ckpt={vp_run}", "sampler=ipndm", "sampler.coefficients=fitted", "n=2",
                          "batch_size=2", "grid=0", f"out={tmp_path / 'c'}")
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "sampler.timesteps=fitted" in stderr, stderr


@pytest.mark.slow
def test_sweep_walks_fitted_weights_on_the_fitted_grid(cli, vp_run, tmp_path):
    """sweep.options={ipndm:{coefficients:fitted}}: the 'ipndm fitted' row walks the fitted grid with the fitted
    weights, the fixed row Adams-Bashforth's; without sweep.fitted=true it is one line."""
    args = ("evaluate", f"ckpt={vp_run}", "task=sweep", "sweep.samplers=[ipndm]", "sweep.steps=[3]", "n=4",
            "batch_size=4", "sweep.options={ipndm:{coefficients:fitted}}", "schedule.fine_steps=20", "schedule.n=16",
            f"out={tmp_path}",
            "fid.inception=false", "fid.digit_fd=false", "sweep.grids=false")
    code, _, stderr = cli(*args, "sweep.fitted=true")
    assert code == 0, stderr
    rows = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["rows"]
    assert [r["sampler"] for r in rows] == ["ipndm", "ipndm fitted"] and all(r["nfe"] == 3 for r in rows)
    assert "coefficients" in json.loads((tmp_path / "schedules" / "ipndm_3.json").read_text())
    code, _, stderr = cli(*args)
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "sweep.fitted=true" in stderr, stderr
