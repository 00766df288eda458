r"""KID, the Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs", Sec. 4 and App. D).

The squared maximum mean discrepancy between the feature distributions of samples X and references Y under the
cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, estimated without bias on subsets of m features from each:

    MMD^2_u = 1/(m(m-1)) sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] - 2/m^2 sum_{i, j} k(x_i, y_j).

Unlike FID it has no bias in n, so numbers at different n compare, and it can be slightly negative.
The mean and standard deviation over random subsets are reported, as in the paper and torch-fidelity
(100 subsets of 1000). When both sets hold n features and n is no more than the subset size, every subset would be
the whole of both sets and their spread 0 (torch-fidelity reports that 0); the estimate is then made once on all
features and its spread is the delete-one jackknife's standard error (Efron & Stein 1981), which drops the i-th
feature of each set together:

    se^2 = (n - 1) / n sum_i (MMD^2_u(-i) - mean_j MMD^2_u(-j))^2.

It matches the estimate's spread over independent draws when the distributions differ (samples against data) and
overstates it when they are equal, where the U-statistic is degenerate (tests/evaluation/test_kid.py).
"""
from __future__ import annotations

import torch
from torch import Tensor


def polynomial_kernel(x: Tensor, y: Tensor, degree: int = 3, coef0: float = 1.0) -> Tensor:
    """k(x, y) = (x.y / d + coef0)^degree for all pairs of rows: (n, d), (m, d) -> (n, m)."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: Tensor, y: Tensor) -> Tensor:
    """The unbiased MMD^2 estimate between equal-sized feature sets x, y of shape (m, d), m >= 2."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within - 2 * k_xy.sum() / m**2


def mmd2_jackknife(x: Tensor, y: Tensor) -> tuple[float, float]:
    """(MMD^2_u, its jackknife standard error) of equal-sized feature sets x, y of shape (n, d), n >= 3.

    The n leave-one-out estimates come from the kernel matrices' sums in O(n^2): dropping x_i and y_i removes
    row i and column i of each matrix."""
    n = x.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    row_xx = k_xx.sum(1) - k_xx.diagonal()  # sum_{j != i} k(x_i, x_j)
    row_yy = k_yy.sum(1) - k_yy.diagonal()
    s_xx, s_yy, s_xy = row_xx.sum(), row_yy.sum(), k_xy.sum()
    estimate = (s_xx + s_yy) / (n * (n - 1)) - 2 * s_xy / n**2
    within_i = (s_xx - 2 * row_xx + s_yy - 2 * row_yy) / ((n - 1) * (n - 2))
    between_i = (s_xy - k_xy.sum(1) - k_xy.sum(0) + k_xy.diagonal()) / (n - 1) ** 2
    leave_one_out = within_i - 2 * between_i
    variance = (n - 1) / n * ((leave_one_out - leave_one_out.mean()) ** 2).sum()
    return float(estimate), float(variance.sqrt())


def kid(features: Tensor, reference: Tensor, subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> tuple[float, float]:
    """(mean, std) of MMD^2_u over ``subsets`` random subsets of min(subset_size, n, n_ref) rows of each set; when
    that subset would hold every row of both sets, (MMD^2_u of all rows, its jackknife standard error) instead.

    ``generator`` (default: seed 0) picks the subsets, so the same features give the same numbers.
    """
    x, y = features.reshape(len(features), -1).double(), reference.reshape(len(reference), -1).double()
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"KID needs features of the same size, got {x.shape[1]} and {y.shape[1]}")
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError(f"KID needs at least 2 feature vectors on each side, got {len(x)} and {len(y)}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    if m == len(x) == len(y) and m >= 3:
        return mmd2_jackknife(x, y)
    values = torch.stack([mmd2_unbiased(x[torch.randperm(len(x), generator=generator)[:m]],
                                        y[torch.randperm(len(y), generator=generator)[:m]]) for _ in range(subsets)])
    return float(values.mean()), float(values.std(unbiased=False)) if subsets > 1 else 0.0
