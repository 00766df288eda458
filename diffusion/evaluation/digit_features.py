r"""An offline sample-quality metric for MNIST: the Frechet distance in the features of a small digit classifier.

FID (Heusel et al. 2017) needs Inception weights, which need the internet. For digits a small CNN trained once on
the bundled MNIST5k train split does the same job offline: its 128-d penultimate activations summarise what makes
a digit recognisable, and

    FD = ||mu_s - mu_r||^2 + tr(C_s + C_r - 2 (C_s C_r)^{1/2})

between the Gaussians fitted to the features of samples (s) and of the real train digits (r) is small exactly when
the samples look like digits in the right proportions. Numbers are comparable only between runs that use the same
classifier (same data, same seed): the cache key records both.

The classifier trains in seconds on one CPU core (its accuracy on the 500 test digits is printed and stored), is cached in ``cache_dir()``
(``$DIFFUSION_CACHE``, else ``~/.cache/diffusion``) as safetensors together with the reference statistics,
and loads back without pickle.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from diffusion.errors import EvaluationError
from diffusion.evaluation.frechet import frechet_distance, gaussian_stats
from diffusion.utils import write_atomic

VERSION = 1  # bump when the network, its training or the feature layer change: old caches are then ignored
FEATURE_DIM = 128


class DigitNet(nn.Module):
    """conv(16) -> pool -> conv(32) -> pool -> fc(128) = features -> fc(10) = logits, on 28x28 inputs in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 7 * 7, FEATURE_DIM)
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def reset_parameters(self, generator: torch.Generator) -> None:
        """He-uniform weights and zero biases drawn from ``generator`` (not the global RNG)."""
        for p in self.parameters():
            if p.ndim > 1:
                fan_in = p[0].numel()
                bound = (6.0 / fan_in) ** 0.5
                with torch.no_grad():
                    p.uniform_(-bound, bound, generator=generator)
            else:
                nn.init.zeros_(p)


def cache_dir() -> Path:
    """Where trained classifiers and reference statistics live: ``$DIFFUSION_CACHE`` or ``~/.cache/diffusion``."""
    root = os.environ.get("DIFFUSION_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "diffusion"


def to_float_images(images: Tensor) -> Tensor:
    """uint8 images, (N, 1, 28, 28) or (N, 28, 28, 1) or (N, 28, 28), as float32 (N, 1, 28, 28) in [0, 1]."""
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8:
        raise EvaluationError(f"digit features take uint8 images, got {images.dtype}: quantize samples with to_uint8() first")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] == 1 and images.shape[1] != 1:
        images = images.permute(0, 3, 1, 2)
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise EvaluationError(f"digit features need 1x28x28 digits, got images of shape {tuple(images.shape)}")
    return images.float() / 255.0


def _fingerprint(images: Tensor, labels: Tensor) -> str:
    h = hashlib.sha256()
    h.update(images.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _mnist5k(split: str) -> tuple[Tensor, Tensor]:
    from diffusion.data.mnist5k import MNIST5k

    data = MNIST5k(split=split, as_uint8=True)
    return data.images, data.labels


def _shift(x: Tensor, generator: torch.Generator, max_pixels: float = 2.0) -> Tensor:
    """Random translations of up to ``max_pixels`` (a cheap augmentation: 4,500 digits are few)."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = (2 * torch.rand(n, 2, generator=generator) - 1) * (2 * max_pixels / x.shape[-1])
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def train_classifier(images: Tensor, labels: Tensor, epochs: int = 6, batch_size: int = 128, lr: float = 2e-3,
                     seed: int = 0) -> DigitNet:
    """Train ``DigitNet`` with Adam, a one-cycle learning rate and random shifts: ~98% test accuracy.

    Runs on one CPU thread: these layers are too small to gain from more, and on a busy machine extra
    threads spin against other processes (measured: 5x slower with 2 threads on 2 shared cores).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(images, labels, epochs, batch_size, lr, seed)
    finally:
        torch.set_num_threads(threads)


def _train(images: Tensor, labels: Tensor, epochs: int, batch_size: int, lr: float, seed: int) -> DigitNet:
    generator = torch.Generator().manual_seed(seed)
    net = DigitNet()
    net.reset_parameters(generator)
    x_all, y_all = to_float_images(images), labels.long()
    steps_per_epoch = -(-len(x_all) // batch_size)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_all), generator=generator)
        for i in range(0, len(x_all), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(net(_shift(x_all[idx], generator)), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


@torch.no_grad()
def _batched(fn, x: Tensor, batch_size: int = 1000) -> Tensor:
    return torch.cat([fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else fn(x)


def save_tensors(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors file written atomically (concurrent first uses race harmlessly: the last rename wins)."""
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    write_atomic(path, lambda f: f.write(data))


def _read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


@dataclass
class DigitFeatures:
    """A trained digit classifier, its test accuracy and the reference statistics of the real train digits."""

    net: DigitNet
    test_accuracy: float
    ref_mu: Tensor
    ref_cov: Tensor
    train_seconds: float = 0.0

    @torch.no_grad()
    def features(self, images: Tensor, batch_size: int = 1000) -> Tensor:
        """128-d features of uint8 digits, float64 (N, 128)."""
        x = to_float_images(images)
        return _batched(self.net.features, x, batch_size).double()

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        return _batched(self.net, to_float_images(images)).argmax(1)

    def stats(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return gaussian_stats(self.features(images))

    def frechet_distance(self, images: Tensor) -> float:
        """FD between the digit features of uint8 ``images`` and those of the real MNIST5k train digits."""
        if len(images) < 2:
            raise EvaluationError(f"the digit Frechet distance needs at least 2 images, got {len(images)}")
        mu, cov = self.stats(images)
        return frechet_distance(mu, cov, self.ref_mu, self.ref_cov)


def load_digit_features(cache: str | Path | None = None, epochs: int = 6, seed: int = 0,
                        log: Callable[[str], None] | None = None) -> DigitFeatures:
    """The cached classifier and reference statistics; trained (seconds) and cached on first use.

    The cache file is keyed by the network version, the training seed/epochs and a hash of the MNIST5k digits, so a
    change in any of them retrains instead of reusing stale weights.
    """
    train_x, train_y = _mnist5k("train")
    test_x, test_y = _mnist5k("test")
    key = f"v{VERSION}-e{epochs}-s{seed}-{_fingerprint(train_x, train_y)}"
    path = Path(cache) if cache is not None else cache_dir()
    path = path / f"digit_classifier_{key}.safetensors"
    if path.exists():
        try:
            tensors = load_file(str(path))
            meta = _read_metadata(path)
            net = DigitNet()
            net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
            return DigitFeatures(net.eval(), float(meta["test_accuracy"]), tensors["ref_mu"], tensors["ref_cov"])
        except Exception as e:  # a truncated or foreign file: retrain rather than fail
            if log is not None:
                log(f"digit classifier cache {path} unreadable ({type(e).__name__}); retraining")
    start = time.perf_counter()
    net = train_classifier(train_x, train_y, epochs=epochs, seed=seed)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        accuracy = float((_batched(net, to_float_images(test_x)).argmax(1) == test_y).float().mean())
    digits = DigitFeatures(net, accuracy, torch.zeros(0), torch.zeros(0), seconds)
    digits.ref_mu, digits.ref_cov = digits.stats(train_x)
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors.update(ref_mu=digits.ref_mu, ref_cov=digits.ref_cov)
    meta = {"test_accuracy": repr(accuracy), "train_seconds": f"{seconds:.2f}", "key": key,
            "reference": json.dumps({"data": "mnist5k", "split": "train", "n": len(train_x)})}
    save_tensors(tensors, path, meta)
    if log is not None:
        log(f"trained the digit classifier in {seconds:.1f}s: test accuracy {accuracy:.2%}; cached at {path}")
    return digits
