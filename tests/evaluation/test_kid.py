"""KID against its closed form on Gaussians, its unbiasedness, and torch-fidelity's implementation.

For the cubic kernel k(x, y) = (x.y / d + 1)^3, E k(x, y) = sum_j C(3, j) d^-j <M_j(P), M_j(Q)> with M_j the j-th
moment tensor, so MMD^2(P, Q) = sum_j C(3, j) d^-j ||M_j(P) - M_j(Q)||^2, and Gaussian moments follow from Isserlis:
M_1 = mu, M_2 = mu mu^T + S, M_3 = mu (x) mu (x) mu + the three placements of mu (x) S.
"""
from __future__ import annotations

import math

import pytest
import torch

from diffusion.evaluation.kid import kid, mmd2_jackknife, mmd2_unbiased


def _moments(mu: torch.Tensor, cov: torch.Tensor) -> list[torch.Tensor]:
    m2 = torch.outer(mu, mu) + cov
    m3 = (torch.einsum("i,j,k->ijk", mu, mu, mu) + torch.einsum("i,jk->ijk", mu, cov)
          + torch.einsum("j,ik->ijk", mu, cov) + torch.einsum("k,ij->ijk", mu, cov))
    return [mu, m2, m3]


def exact_mmd2(mu_p, cov_p, mu_q, cov_q) -> float:
    d = len(mu_p)
    return float(sum(math.comb(3, j) / d**j * ((a - b) ** 2).sum()
                     for j, (a, b) in enumerate(zip(_moments(mu_p, cov_p), _moments(mu_q, cov_q)), start=1)))


def _draw(mu, cov, n, g):
    return mu + torch.randn(n, len(mu), generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T


MU_P, COV_P = torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
MU_Q = torch.tensor([0.5, -0.3], dtype=torch.float64)
COV_Q = torch.tensor([[1.2, 0.3], [0.3, 0.8]], dtype=torch.float64)


@pytest.mark.parametrize("same", [True, False])
def test_unbiased_estimate_averages_to_the_closed_form(same):
    # independent small sets: the mean of the U-statistic is the exact MMD^2 (0 when P = Q), within 3.5 standard
    # errors; the biased V-statistic (with the diagonal) would sit ~ E k(x, x)/m above it, far outside
    g = torch.Generator().manual_seed(0)
    mu_q, cov_q = (MU_P, COV_P) if same else (MU_Q, COV_Q)
    exact = exact_mmd2(MU_P, COV_P, mu_q, cov_q)
    m, reps = 20, 1500
    values = torch.stack([mmd2_unbiased(_draw(MU_P, COV_P, m, g), _draw(mu_q, cov_q, m, g)) for _ in range(reps)])
    se = float(values.std() / reps**0.5)
    assert abs(float(values.mean()) - exact) < 3.5 * se
    assert se < 0.1 * (exact + 1.0)  # the check has teeth: the standard error is small against the quantities


def test_kid_mean_and_std_on_subsets():
    g = torch.Generator().manual_seed(1)
    x, y = _draw(MU_Q, COV_Q, 1500, g), _draw(MU_P, COV_P, 1500, g)
    exact = exact_mmd2(MU_P, COV_P, MU_Q, COV_Q)
    mean, std = kid(x, y, subsets=20, subset_size=500)
    assert abs(mean - exact) < 2 * std and std < 0.3 * exact
    assert kid(x, y, subsets=20, subset_size=500) == (mean, std)  # seeded: the same numbers again
    assert kid(x[:10], y, subsets=5, subset_size=1000)[0] == pytest.approx(
        kid(x[:10], y, subsets=5, subset_size=10)[0])  # the subset size is capped by the smaller set


def test_matches_torch_fidelity():
    from torch_fidelity.metric_kid import kid_features_to_metric

    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(300, 16, generator=g), torch.rand(300, 16, generator=g) + 0.1
    # one subset holding every feature: no randomness left, so both must agree to round-off
    theirs = kid_features_to_metric(x, y, kid_subsets=1, kid_subset_size=300, verbose=False, rng_seed=0,
                                    kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                    kid_kernel_poly_coef0=1)
    assert kid(x, y, subsets=1, subset_size=300)[0] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        kid(torch.zeros(1, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="same size"):
        kid(torch.zeros(4, 3), torch.zeros(5, 2))


def test_jackknife_leave_one_out_values_match_recomputation():
    # the O(n^2) leave-one-out sums against recomputing MMD^2_u without row i, for each i
    g = torch.Generator().manual_seed(3)
    x, y = _draw(MU_P, COV_P, 12, g), _draw(MU_Q, COV_Q, 12, g)
    estimate, se = mmd2_jackknife(x, y)
    loo = torch.stack([mmd2_unbiased(torch.cat([x[:i], x[i + 1:]]), torch.cat([y[:i], y[i + 1:]])) for i in range(12)])
    assert estimate == pytest.approx(float(mmd2_unbiased(x, y)), rel=1e-12)
    assert se == pytest.approx(float((11 / 12 * ((loo - loo.mean()) ** 2).sum()).sqrt()), rel=1e-10)


@pytest.mark.parametrize("same", [True, False])
def test_whole_set_spread_is_the_jackknife_standard_error(same):
    # n features on each side and subsets of n: the subsets would all be the whole sets (spread 0). The reported
    # spread must be the estimate's real standard deviation over independent draws of the sets (300 of them, so
    # its own relative error is ~4%): within 25% of it for different distributions (samples against data); for
    # equal ones the U-statistic is degenerate and the jackknife known to overstate, here by ~1.3x: conservative
    g = torch.Generator().manual_seed(4)
    mu_q, cov_q = (MU_P, COV_P) if same else (MU_Q, COV_Q)
    n, reps = 100, 300
    draws = [kid(_draw(MU_P, COV_P, n, g), _draw(mu_q, cov_q, n, g), subsets=10, subset_size=1000) for _ in range(reps)]
    estimates, reported = torch.tensor([d[0] for d in draws]), torch.tensor([d[1] for d in draws])
    ratio = float(reported.mean() / estimates.std())
    assert float(reported.min()) > 0
    assert 1.0 < ratio < 1.6 if same else 0.75 < ratio < 1.25, ratio
