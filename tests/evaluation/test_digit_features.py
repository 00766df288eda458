"""The digit classifier behind the offline MNIST quality score: shipped, accurate, the same everywhere, and its
Frechet distance separates real digits from noise."""
from __future__ import annotations

import pytest
import torch

from diffusion.data import MNIST5k
from diffusion.evaluation import digit_features
from diffusion.evaluation.digit_features import (ASSETS, CLASSIFIER_FILE, REFERENCE_FILE, DigitFeatures, DigitMetricError,
                                                 build_digit_assets, load_digit_features, to_float_images)


def test_classifier_is_accurate_on_the_test_split(digits: DigitFeatures):
    test = MNIST5k(split="test", as_uint8=True)
    accuracy = float((digits.predict(test.images) == test.labels).float().mean())
    assert accuracy > 0.90
    assert accuracy == pytest.approx(digits.test_accuracy, abs=1e-6)


def test_frechet_distance_is_small_between_real_splits_and_large_for_noise(digits: DigitFeatures):
    # The same 500 test digits against the 4,500 train digits (their reference): only sampling error
    # separates them. Uniform noise and blurred digits are far off; the margins are wide (measured:
    # real ~3, blurred ~85, noise ~440) so that a retrained classifier (other BLAS, other CPU) passes too.
    test = MNIST5k(split="test", as_uint8=True).images
    fd_real = digits.frechet_distance(test, split="train")
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, test.shape, generator=g, dtype=torch.uint8)
    blurred = torch.nn.functional.avg_pool2d(test.float(), 5, 1, 2).round().to(torch.uint8)
    fd_noise, fd_blur = digits.frechet_distance(noise, "train"), digits.frechet_distance(blurred, "train")
    assert 0 <= fd_real < 0.1 * fd_blur
    assert fd_blur < fd_noise
    assert fd_noise > 30 * fd_real


@pytest.mark.parametrize("split", ["train", "test"])
def test_shipped_statistics_are_the_classifiers_own(digits: DigitFeatures, split):
    # the shipped mu, cov of each split are what the shipped classifier gives its digits. float32 convolutions with
    # other kernels (another thread count, another CPU) differ in the last bits: measured up to 2.4e-7 on covariance
    # entries of size ~0.1-1, so the tolerance is 1e-5 of the largest entry
    images = MNIST5k(split=split, as_uint8=True).images
    mu, cov = digits.stats(images)
    ref_mu, ref_cov = digits.reference[split]
    torch.testing.assert_close(mu, ref_mu, rtol=0, atol=1e-5 * float(ref_mu.abs().max()))
    torch.testing.assert_close(cov, ref_cov, rtol=0, atol=1e-5 * float(ref_cov.abs().max()))
    assert digits.frechet_distance(images, split=split) == pytest.approx(0.0, abs=1e-6)
    assert digits.frechet_distance(images, split={"train": "test", "test": "train"}[split]) > 0.5


def test_shipped_files_are_small_plain_tensors():
    from safetensors.torch import load_file

    assert (ASSETS / CLASSIFIER_FILE).stat().st_size < 1_000_000
    weights = load_file(str(ASSETS / CLASSIFIER_FILE))
    assert set(weights) == {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc.weight", "fc.bias",
                            "head.weight", "head.bias"}
    meta = digit_features._read_metadata(ASSETS / REFERENCE_FILE)
    assert meta["classifier_sha256"] == digit_features._read_metadata(ASSETS / CLASSIFIER_FILE)["classifier_sha256"]


def test_damaged_or_missing_files_are_a_one_line_error(tmp_path):
    with pytest.raises(DigitMetricError, match="python -m diffusion.evaluation.digit_features") as e:
        load_digit_features(tmp_path)  # missing
    assert "\n" not in str(e.value)
    for name in (CLASSIFIER_FILE, REFERENCE_FILE):
        (tmp_path / name).write_bytes((ASSETS / name).read_bytes())
    load_digit_features(tmp_path)
    (tmp_path / CLASSIFIER_FILE).write_bytes((ASSETS / CLASSIFIER_FILE).read_bytes()[:1000])  # truncated
    with pytest.raises(DigitMetricError, match="cannot load the digit classifier"):
        load_digit_features(tmp_path)


@pytest.mark.slow
def test_regenerating_gives_the_shipped_classifier(tmp_path, digits: DigitFeatures):
    # training is deterministic (fixed seed, one thread): on the machine that made the files it reproduces them bit
    # for bit; elsewhere other float32 kernels may move the weights slightly, so features are compared with a tolerance
    again = build_digit_assets(tmp_path)
    assert again.test_accuracy == pytest.approx(digits.test_accuracy, abs=0.01)
    x = MNIST5k(split="test", as_uint8=True).images
    torch.testing.assert_close(again.features(x), digits.features(x), rtol=0.05, atol=0.05)
    for split in ("train", "test"):
        assert again.frechet_distance(x, split) == pytest.approx(digits.frechet_distance(x, split), rel=0.05, abs=0.05)


def test_images_must_be_uint8_digits():
    with pytest.raises(ValueError, match="uint8"):
        to_float_images(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="28x28"):
        to_float_images(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    nhwc = torch.arange(2 * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(2, 28, 28, 1)
    torch.testing.assert_close(to_float_images(nhwc), to_float_images(nhwc.permute(0, 3, 1, 2)))


def test_known_figures_of_the_shipped_classifier(digits: DigitFeatures):
    # the same on every machine, since the classifier ships (measured on the machine that made it; float32 kernels
    # elsewhere move the last digits only, hence rel 1e-4). The two real splits are 2.29 apart; blurring the test
    # digits (5x5 box) takes them ~90x further than that
    test = MNIST5k(split="test", as_uint8=True).images
    blurred = torch.nn.functional.avg_pool2d(test.float(), 5, 1, 2).round().to(torch.uint8)
    assert digits.frechet_distance(test, "train") == pytest.approx(2.28515, rel=1e-4)
    assert digits.frechet_distance(blurred, "test") == pytest.approx(200.4625, rel=1e-4)
    assert digits.frechet_distance(blurred, "train") == pytest.approx(203.7704, rel=1e-4)
