"""The digit classifier behind the offline MNIST quality score: accurate, cached, and its Frechet distance
separates real digits from noise."""
from __future__ import annotations

import pytest
import torch

from diffusion.data import MNIST5k
from diffusion.evaluation.digit_features import DigitFeatures, load_digit_features, to_float_images


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
    fd_real = digits.frechet_distance(test)
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, test.shape, generator=g, dtype=torch.uint8)
    blurred = torch.nn.functional.avg_pool2d(test.float(), 5, 1, 2).round().to(torch.uint8)
    fd_noise, fd_blur = digits.frechet_distance(noise), digits.frechet_distance(blurred)
    assert 0 <= fd_real < 0.1 * fd_blur
    assert fd_blur < fd_noise
    assert fd_noise > 30 * fd_real


def test_frechet_distance_of_the_reference_itself_is_zero(digits: DigitFeatures):
    train = MNIST5k(split="train", as_uint8=True).images
    assert digits.frechet_distance(train) == pytest.approx(0.0, abs=1e-6)


def test_cached_classifier_reloads_without_training(digits: DigitFeatures, digit_cache):
    files = list(digit_cache.glob("digit_classifier_*.safetensors"))
    assert len(files) == 1
    again = load_digit_features(digit_cache)
    assert again.train_seconds == 0.0  # loaded, not retrained
    x = MNIST5k(split="test", as_uint8=True).images[:32]
    torch.testing.assert_close(again.features(x), digits.features(x))


def test_damaged_cache_is_retrained(tmp_path, monkeypatch, digits: DigitFeatures, digit_cache):
    from diffusion.evaluation import digit_features

    src = next(digit_cache.glob("digit_classifier_*.safetensors"))
    (tmp_path / src.name).write_bytes(src.read_bytes()[:100])  # truncated
    trained = []
    # the real training is tested above; here only that a damaged file leads to it (and is replaced)
    monkeypatch.setattr(digit_features, "train_classifier", lambda *a, **k: trained.append(1) or digits.net)
    fresh = load_digit_features(tmp_path)
    assert trained == [1] and fresh.test_accuracy == pytest.approx(digits.test_accuracy)
    again = load_digit_features(tmp_path)  # the rewritten file now loads
    assert trained == [1] and again.train_seconds == 0.0


def test_images_must_be_uint8_digits():
    with pytest.raises(ValueError, match="uint8"):
        to_float_images(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="28x28"):
        to_float_images(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    nhwc = torch.arange(2 * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(2, 28, 28, 1)
    torch.testing.assert_close(to_float_images(nhwc), to_float_images(nhwc.permute(0, 3, 1, 2)))
