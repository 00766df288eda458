"""The likelihood table on an exact-score model: a Gaussian mixture whose noised densities are known in closed form.

With the exact eps model the probability-flow ODE carries p_{t_eps} exactly, so its NLL must equal the true
-log p_{t_eps}(x) image by image; the variational bound is >= the NLL and (with the exact score) tight, so it
must sit at the truth within its Monte-Carlo error. Both see the same dequantized images.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from diffusion.runs.store import to_uint8
from diffusion.evaluation.likelihood_table import likelihood_table
from diffusion.likelihood import bits_per_dim, dequantize
from diffusion.processes import VESDE, VPSDE, SubVPSDE
from diffusion.toy import GaussianMixture

SHAPE = (1, 2, 4)  # 8 pixels: the exact divergence costs 8 vector-Jacobian products per evaluation
D = 8


def _images(n: int = 16) -> tuple[GaussianMixture, torch.Tensor]:
    mixture = GaussianMixture.random(D, k=3, spread=0.4, scale=(0.05, 0.2), seed=0)
    x = mixture.sample(n, torch.Generator().manual_seed(1), shape=SHAPE)
    return mixture, to_uint8(x)


def _check(process, ode_tol: float = 0.01):
    mixture, images = _images()
    table = likelihood_table(process, mixture.eps_model(process), images, method="dopri5", rtol=1e-6, atol=1e-6,
                             t_samples=64, batch_size=8, seed=3, dtype=torch.float64)
    # the table's dequantized images are reproducible from the seed, and are what both estimators saw
    torch.testing.assert_close(table.x, dequantize(images, torch.Generator().manual_seed(3)).double())
    truth = bits_per_dim(-mixture.marginal_log_prob(process, table.x, process.t_eps), D)
    ode, bound = table["ODE NLL"], table["variational bound"]
    # ODE at rtol=atol=1e-6: measured max |error| 0.003 bits/dim per image (VP, sub-VP), 0.010 for VE, whose
    # ODE spans sigma = 0.01..50; the tolerances leave room for other BLAS
    assert (ode.bpd - truth).abs().max() < ode_tol
    assert ode.mc == 0.0 and ode.nfe > 0 and ode.seconds > 0
    # the bound: above the ODE NLL and at the truth, up to 4 of its Monte-Carlo standard errors (+ the ODE error)
    assert math.isfinite(bound.mc) and bound.mc > 0
    assert bound.mean >= ode.mean - 4 * bound.mc
    assert abs(bound.mean - float(truth.mean())) < 4 * bound.mc + ode_tol
    assert bound.nfe == 4 * 64  # two antithetic pairs per time sample
    return table


def test_ode_nll_and_bound_match_the_exact_density_vp():
    table = _check(VPSDE())
    md = table.to_markdown()
    assert "| ODE NLL |" in md and "| variational bound |" in md and "bits/dim" in md
    data = json.loads(table.to_json())
    assert data["n"] == 16 and data["dims"] == D and len(data["per_image_bits_per_dim"]["ODE NLL"]) == 16
    assert {e["estimator"] for e in data["estimates"]} == {"ODE NLL", "variational bound"}


@pytest.mark.slow
@pytest.mark.parametrize("process,ode_tol", [(VESDE(), 0.02), (SubVPSDE(), 0.01)], ids=["vesde", "subvpsde"])
def test_ode_nll_and_bound_match_the_exact_density(process, ode_tol):
    _check(process, ode_tol)


def test_hutchinson_reports_its_monte_carlo_error():
    mixture, images = _images(4)
    process = VPSDE()
    table = likelihood_table(process, mixture.eps_model(process), images, bound=False, divergence="hutchinson",
                             probes=4, rtol=1e-4, atol=1e-4, seed=0, dtype=torch.float64)
    est = table["ODE NLL"]
    assert est.detail.endswith("hutchinson (4 probes)")
    assert torch.isfinite(est.mc_stderr).all() and est.mc > 0
    truth = bits_per_dim(-mixture.marginal_log_prob(process, table.x, process.t_eps), D)
    # unbiased: within 5 MC errors of the truth (plus the solver's error at 1e-4)
    assert abs(est.mean - float(truth.mean())) < 5 * est.mc + 0.02


def test_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        likelihood_table(VPSDE(), lambda x, t: x, torch.zeros(2, 1, 2, 2))
