"""The digit report on real digits, where every number has a known answer: the test digits are at distance 0 from
the test split, the train digits are perfect copies of the training set, one repeated class is uneven."""
from __future__ import annotations

import pytest
import torch

from diffusion.data import MNIST5k
from diffusion.evaluation.digit_metric import DigitMetric, evenness, nearest_distances


@pytest.fixture(scope="module")
def metric(digits):
    return DigitMetric(digits, kid_subsets=20)


def test_evenness_and_nearest_distances():
    assert evenness(torch.arange(10).repeat(7))[0] == pytest.approx(1.0)
    assert evenness(torch.full((50,), 3))[0] == pytest.approx(0.0)
    assert evenness(torch.tensor([0, 1]))[0] == pytest.approx(torch.log(torch.tensor(2.0)).item() / torch.log(torch.tensor(10.0)).item())
    bank = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    torch.testing.assert_close(nearest_distances(torch.tensor([[3.0, 0.0], [3.0, 4.0]]), bank),
                               torch.tensor([3.0, 0.0], dtype=torch.float64))


def test_test_digits_score_as_real_unseen_digits(metric):
    test = MNIST5k(split="test", as_uint8=True).images
    r = metric(test)
    assert r["digit_n"] == 500 and r["digit_fd"] == pytest.approx(0.0, abs=1e-6)  # the reference itself
    assert r["digit_fd_train"] == pytest.approx(r["digit_fd_train_floor"], rel=1e-6)  # all 500 = the floor's draw
    assert r["digit_fd_floor_n"] == 500 and r["digit_fd_floor"] > 0
    # one subset = all 500 on both sides: for identical sets the U-statistic is -2/(m-1) (mean k(x, x) - mean k(x, y)),
    # slightly negative, and far below mirrored digits'
    assert r["digit_kid"] < 0 and abs(r["digit_kid"]) < 0.1 * metric(test.flip(-1))["digit_kid"]
    assert r["digit_nn_ratio"] == pytest.approx(1.0, abs=0.03)  # the median of per-class medians' ratios
    assert r["digit_near_copies"] == pytest.approx(0.05, abs=0.01)  # the 5% quantile within each class
    assert r["digit_evenness"] == pytest.approx(r["digit_evenness_test"]) and r["digit_evenness"] > 0.98
    assert sum(r["digit_class_counts"]) == 500


def test_memorised_training_digits_are_flagged(metric):
    train = MNIST5k(split="train", as_uint8=True).images[:300]
    r = metric(train)
    # distance 0 up to cdist's round-off (it expands ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b)
    assert r["digit_near_copies"] == 1.0 and r["digit_nn_median"] < 1e-4 and r["digit_nn_ratio"] < 1e-4
    # and the train-split distance rewards them (it is below its own floor) while the test-split one does not
    assert r["digit_fd_train"] < r["digit_fd_train_floor"]


def test_one_class_is_uneven_and_far(metric):
    test = MNIST5k(split="test", as_uint8=True)
    ones = test.images[test.labels == 1]
    r = metric(ones)
    assert r["digit_evenness"] < 0.1 and r["digit_fd"] > 10 * r["digit_fd_floor"]
    assert 0.02 < r["digit_near_copies"] < 0.2 and 0.7 < r["digit_nn_ratio"] < 1.3  # real unseen ones: no copies
    assert r["digit_kid"] > 10 * max(r["digit_kid_floor"], r["digit_kid_floor_std"])


def test_floor_falls_with_n(metric):
    assert metric.floor(50)["digit_fd_floor"] > metric.floor(2000)["digit_fd_floor"] > 0
    assert metric.floor(10_000)["digit_fd_floor_n"] == 4500
    with pytest.raises(ValueError, match="at least 2"):
        metric(torch.zeros(1, 1, 28, 28, dtype=torch.uint8))
