"""evaluate.py end to end on unet_tiny models trained for 2 steps by train.py inside the test session."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

OFFLINE = "fid.inception_url=http://127.0.0.1:9/weights.pth"  # FID's offline path, deterministic in any network


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("evaluate.py: error: ")
    return lines[0]


def test_likelihood_table(cli, vp_run, tmp_path):
    # loose tolerances and few samples: the estimators' accuracy is tested on the exact Gaussian mixture
    code, stdout, stderr = cli("evaluate", f"ckpt={vp_run}", "task=likelihood", "n=2", f"out={tmp_path}",
                               "likelihood.divergence=hutchinson", "likelihood.probes=2", "likelihood.rtol=1e-2",
                               "likelihood.atol=1e-2", "likelihood.t_samples=4")
    assert code == 0, stderr
    result = json.loads((tmp_path / "likelihood.json").read_text())
    assert result["n"] == 2 and result["dims"] == 784 and result["settings"]["split"] == "test"
    for est in result["estimates"]:
        assert math.isfinite(est["bits_per_dim"]) and 0 < est["bits_per_dim"] < 100
        assert math.isfinite(est["stderr"]) and math.isfinite(est["mc_stderr"]) and est["nfe"] > 0
    assert [e["estimator"] for e in result["estimates"]] == ["ODE NLL", "variational bound"]
    table = (tmp_path / "likelihood.md").read_text()
    assert table in stdout and "| ODE NLL | dopri5, rtol=0.01, atol=0.01, hutchinson (2 probes) |" in table
    # Analytic-DPM's Gamma serves only the Markov-chain (DDPM) bounds: none is estimated or written for a VP run
    assert "Gamma" not in stderr and not (vp_run / "eval" / "gamma_ema.json").exists()


def test_ddpm_bound_into_the_run_folder(cli, ddpm_run):
    """DDPM: the SDE bound and the DDPM bounds of the full chain and of K=10 steps with beta_tilde and analytic
    variances, each with its standard error and NFE; Gamma is estimated once and kept in <run>/eval for samplers."""
    gamma_file = ddpm_run / "eval" / "gamma_ema.json"
    gamma_file.unlink(missing_ok=True)
    args = ("evaluate", f"ckpt={ddpm_run}", "n=2", "likelihood.ode=false", "likelihood.t_samples=4",
            "likelihood.gamma_steps=10", "likelihood.gamma_images=2")
    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    result = json.loads((ddpm_run / "eval" / "likelihood.json").read_text())
    names = [e["estimator"] for e in result["estimates"]]
    assert names == ["SDE bound", "DDPM bound (K=1000, beta_tilde)", "DDPM bound (K=1000, analytic)",
                     "DDPM bound (K=10, beta_tilde)", "DDPM bound (K=10, analytic)"]
    for est in result["estimates"]:
        assert math.isfinite(est["bits_per_dim"]) and math.isfinite(est["mc_stderr"]) and est["nfe"] > 0
    assert [e["nfe"] for e in result["estimates"]] == [16, 6, 6, 6, 6]  # 4 strata x 4; 4 sampled steps + 2 decoder draws
    assert result["settings"]["dequantization"] == "uniform" and result["settings"]["t_eps"] == 0.0
    table = (ddpm_run / "eval" / "likelihood.md").read_text()
    assert "uniformly dequantized" in table and "t_eps=0" in table and "| DDPM bound (K=10, analytic) |" in table
    assert gamma_file.is_file() and "estimated Gamma" in stderr
    code, _, stderr = cli(*args)  # the second run reuses the stored Gamma
    assert code == 0 and "Gamma from" in stderr and "estimated Gamma" not in stderr


def test_analytic_sampling_uses_the_stored_gamma(cli, ddpm_run, tmp_path):
    gamma_file = ddpm_run / "eval" / "gamma_ema.json"
    if not gamma_file.is_file():
        assert cli("evaluate", f"ckpt={ddpm_run}", "n=1", "likelihood.ode=false", "likelihood.sde_bound=false",
                   "likelihood.t_samples=2", "likelihood.steps=null", "likelihood.gamma_steps=10",
                   "likelihood.gamma_images=1")[0] == 0
    for sampler in ("ddpm", "ddim_stochastic"):
        code, _, stderr = cli("sample", f"ckpt={ddpm_run}", f"sampler={sampler}", "sampler.steps=3", "sampler.variance=analytic",
                              "n=2", "grid=0", f"out={tmp_path / sampler}")
        assert code == 0, stderr
        assert (tmp_path / sampler / "samples.npz").is_file()
    code, _, stderr = cli("sample", f"ckpt={ddpm_run}", "sampler=ddpm", "sampler.steps=3", "sampler.variance=analytic",
                          "n=1", f"sampler.gamma={tmp_path / 'none.json'}", f"out={tmp_path / 'x'}")
    assert code == 2 and "no Gamma file" in stderr and len(stderr.strip().splitlines()) == 1


def test_sweep_table_and_plot(cli, ddpm_run, tmp_path):
    code, stdout, stderr = cli("evaluate", f"ckpt={ddpm_run}", "task=sweep", "n=8", "batch_size=8", f"out={tmp_path}",
                               "sweep.samplers=[ddim,dpmpp_2m]", "sweep.steps=[1,2]", "sweep.options={ddim:{eta:0.5}}",
                               OFFLINE)
    assert code == 0, stderr
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert table in stdout
    rows = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["rows"]
    assert [(r["sampler"], r["steps"], r["nfe"]) for r in rows] == [("ddim", 1, 1), ("ddim", 2, 2), ("dpmpp_2m", 1, 1), ("dpmpp_2m", 2, 2)]
    assert all(r["fid"] is None and r["kid"] is None and r["digit_fd"] > 0 and r["seconds"] > 0 for r in rows)
    assert all(r["digit_kid_std"] >= 0 and r["digit_fd_floor_n"] == 8 and r["digit_fd_floor"] > 0 for r in rows)
    assert "| ddim | 2 | 2 |" in table and "| n/a |" in table and "digit FD floor at n=8" in table
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 1000 and (tmp_path / "sweep" / "ddim_2.png").is_file()
    # on digits Inception is off unless asked for (fid.inception=true), said in one line; the digit classifier's
    # accuracy is reported
    assert sum("Inception FID/KID off for 1x28x28 digits" in line for line in stderr.splitlines()) == 1
    assert "FID unavailable" not in stderr
    assert "digit classifier: test accuracy" in stderr
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["samplers"]["ddim"]["eta"] == 0.5


def test_fid_of_an_npz_and_of_a_folder(cli, ddpm_run, tmp_path):
    assert cli("sample", f"ckpt={ddpm_run}", "sampler.steps=1", "n=6", f"out={tmp_path / 's'}")[0] == 0
    code, stdout, stderr = cli("evaluate", "task=fid", f"samples={tmp_path / 's' / 'samples.npz'}", f"ckpt={ddpm_run}",
                               f"out={tmp_path / 'e'}", OFFLINE)
    assert code == 0, stderr
    result = json.loads((tmp_path / "e" / "fid.json").read_text())
    assert result["n"] == 6 and result["fid"] is None and result["digit_fd"] > 0
    assert result["digit_fd_floor_n"] == 6 and result["digit_kid"] is not None and len(result["digit_class_counts"]) == 10
    assert "| n/a |" in stdout and "| digit KID (vs test split) |" in stdout and "(n=6)" in stdout
    # the same images as PNG files, with no checkpoint: 28x28 digits default to the MNIST5k reference
    folder = tmp_path / "pngs"
    folder.mkdir()
    with np.load(tmp_path / "s" / "samples.npz") as f:
        for i, im in enumerate(f["arr_0"]):
            Image.fromarray(im[..., 0]).save(folder / f"{i}.png")
    code, _, stderr = cli("evaluate", "task=fid", f"samples={folder}", OFFLINE)
    assert code == 0, stderr
    again = json.loads((folder / "fid.json").read_text())
    assert again["digit_fd"] == pytest.approx(result["digit_fd"], rel=1e-9)
    # or with the reference data set named (a configs/data option)
    code, _, stderr = cli("evaluate", "task=fid", f"samples={folder}", "data=mnist5k", f"out={tmp_path / 'd'}", OFFLINE)
    assert code == 0, stderr
    assert json.loads((tmp_path / "d" / "fid.json").read_text())["reference"] == "diffusion.data.MNIST5k"


@pytest.mark.parametrize("args,message", [
    (["task=likelihood"], "task=likelihood needs ckpt="),
    (["task=fid"], "task=fid needs samples="),
    (["task=nope"], "Invalid value 'nope'"),
    (["likelihood.rtl=1e-3"], "Key 'rtl' not in 'LikelihoodConfig'"),
    (["rtol=1e-3"], "(did you mean likelihood.rtol?)"),
    (["ckpt=VP", "task=sweep", "sweep.samplers=[ddpm]"], "sampler 'ddpm' cannot run on VPSDE"),
    (["ckpt=VP", "task=sweep", "sweep.options={pc:{snr:0.1}}"], "sweep.options names pc"),
    (["ckpt=PICKLE"], "would run code"),
    (["ckpt=VP", "n=-1"], "n=-1 must be a positive number of test images"),   # [:n] would drop one image
    (["ckpt=VP", "task=sweep", "n=0"], "n=0 must be a positive number of samples per row"),
    (["ckpt=VP", "task=schedule", "schedule.n=-4"], "n=-4 must be a positive number of fitting draws"),
])
def test_bad_requests_are_one_line_errors(cli, vp_run, bad_checkpoints, args, message):
    args = [a.replace("VP", str(vp_run)).replace("PICKLE", str(bad_checkpoints["pickle"])) for a in args]
    code, _, stderr = cli("evaluate", *args)
    assert code == 2
    assert message in _one_error_line(stderr)
    assert not bad_checkpoints["marker"].exists()
