r"""An offline sample-quality metric for MNIST: the Frechet distance in the features of a small digit classifier.

For digits a small CNN trained on the bundled MNIST5k train split does FID's job (Heusel et al. 2017) in seconds:
its 128-d penultimate activations summarise what makes a digit recognisable, and

    FD = ||mu_s - mu_r||^2 + tr(C_s + C_r - 2 (C_s C_r)^{1/2})

between the Gaussians fitted to the features of samples (s) and of real digits (r) is small exactly when the samples
look like digits in the right proportions. The reference is the 500-digit *test* split by default: the train split
is what the diffusion model saw, so closeness to it also rewards memorization (``digit_metric`` reports both).

The trained classifier ships with the package (``assets/digit_classifier.safetensors``, 0.8 MB) together with the
reference statistics of both splits (``assets/digit_reference.safetensors``), so the number is the same on every
machine; both load as plain tensors (safetensors), never as code. They were made by

    python -m diffusion.evaluation.digit_features --out diffusion/evaluation/assets

which trains on one CPU thread from a fixed seed (~10 s, ~98% test accuracy) and writes both files.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from diffusion.errors import EvaluationError
from diffusion.evaluation.frechet import frechet_distance, gaussian_stats
from diffusion.utils import write_atomic

VERSION = 2  # bump when the network, its training or the feature layer change (recorded in the shipped files)
FEATURE_DIM = 128
ASSETS = Path(__file__).resolve().parent / "assets"
CLASSIFIER_FILE = "digit_classifier.safetensors"
REFERENCE_FILE = "digit_reference.safetensors"
SPLITS = ("train", "test")
REGENERATE = "python -m diffusion.evaluation.digit_features --out diffusion/evaluation/assets"


class DigitMetricError(EvaluationError):
    """The digit classifier or its reference statistics cannot be loaded; the message is one line."""


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
    """Where computed reference statistics and converted weights live: ``$DIFFUSION_CACHE``, else
    ``$XDG_CACHE_HOME/diffusion``, else ``~/.cache/diffusion``."""
    root = os.environ.get("DIFFUSION_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "diffusion"


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
    """The trained digit classifier, its test accuracy and the reference statistics of the real digits of both
    MNIST5k splits (``reference[split] = (mu, cov)``; ``ref_mu``/``ref_cov`` are the test split's)."""

    net: DigitNet
    test_accuracy: float
    reference: dict[str, tuple[Tensor, Tensor]]
    train_seconds: float = 0.0
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def ref_mu(self) -> Tensor:
        return self.reference["test"][0]

    @property
    def ref_cov(self) -> Tensor:
        return self.reference["test"][1]

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

    def frechet_distance(self, images: Tensor, split: str = "test") -> float:
        """FD between the digit features of uint8 ``images`` and those of the real MNIST5k ``split`` digits."""
        if len(images) < 2:
            raise EvaluationError(f"the digit Frechet distance needs at least 2 images, got {len(images)}")
        if split not in self.reference:
            raise EvaluationError(f"split={split!r}: the digit reference statistics are for {', '.join(self.reference)}")
        mu, cov = self.stats(images)
        return frechet_distance(mu, cov, *self.reference[split])


def _load_classifier(path: Path) -> tuple[DigitNet, dict[str, str]]:
    tensors, meta = load_file(str(path)), _read_metadata(path)
    net = DigitNet()
    net.load_state_dict(tensors)
    return net.eval(), meta


def load_digit_features(folder: str | Path | None = None, log: Callable[[str], None] | None = None) -> DigitFeatures:
    """The shipped classifier and reference statistics (or those in ``folder``), as plain tensors via safetensors.

    A missing or damaged file is a one-line ``DigitMetricError`` naming the command that regenerates it: the
    classifier is never retrained silently, since a retrained one gives other numbers.
    """
    root = Path(folder) if folder is not None else ASSETS
    try:
        net, meta = _load_classifier(root / CLASSIFIER_FILE)
        ref, ref_meta = load_file(str(root / REFERENCE_FILE)), _read_metadata(root / REFERENCE_FILE)
        reference = {s: (ref[f"{s}_mu"], ref[f"{s}_cov"]) for s in SPLITS}
    except Exception as e:  # noqa: BLE001 - missing, truncated or foreign: the fix is the same
        raise DigitMetricError(f"cannot load the digit classifier from {root} ({type(e).__name__}): "
                               f"restore the package's files or run {REGENERATE}") from None
    if meta.get("classifier_sha256") is not None and ref_meta.get("classifier_sha256") != meta["classifier_sha256"]:
        raise DigitMetricError(f"{root / REFERENCE_FILE} was made with another classifier than {root / CLASSIFIER_FILE}: "
                               f"run {REGENERATE}")
    return DigitFeatures(net, float(meta["test_accuracy"]), reference, metadata=meta)


def _state_sha256(net: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()


def build_digit_assets(out: str | Path, epochs: int = 6, seed: int = 0,
                       log: Callable[[str], None] | None = None) -> DigitFeatures:
    """Train the classifier on the MNIST5k train split (deterministic: fixed seed, one thread) and write
    ``digit_classifier.safetensors`` and ``digit_reference.safetensors`` (mu, cov of both splits) into ``out``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference statistics too: the same kernels every time
    try:
        return _build_digit_assets(Path(out), epochs, seed, log)
    finally:
        torch.set_num_threads(threads)


def _build_digit_assets(out: Path, epochs: int, seed: int, log: Callable[[str], None] | None) -> DigitFeatures:
    train_x, train_y = _mnist5k("train")
    test_x, test_y = _mnist5k("test")
    start = time.perf_counter()
    net = train_classifier(train_x, train_y, epochs=epochs, seed=seed)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        accuracy = float((_batched(net, to_float_images(test_x)).argmax(1) == test_y).float().mean())
    digits = DigitFeatures(net, accuracy, {}, seconds)
    digits.reference = {"train": digits.stats(train_x), "test": digits.stats(test_x)}
    sha = _state_sha256(net)
    common = {"version": str(VERSION), "classifier_sha256": sha, "torch": torch.__version__}
    meta = {**common, "test_accuracy": repr(accuracy), "epochs": str(epochs), "seed": str(seed),
            "data": json.dumps({"data": "mnist5k", "train": _fingerprint(train_x, train_y), "n": len(train_x)})}
    ref_meta = {**common, "n": json.dumps({"train": len(train_x), "test": len(test_x)}),
                "data": json.dumps({s: _fingerprint(*_mnist5k(s)) for s in SPLITS})}
    save_tensors(net.state_dict(), out / CLASSIFIER_FILE, meta)
    save_tensors({f"{s}_{k}": v for s, (mu, cov) in digits.reference.items() for k, v in (("mu", mu), ("cov", cov))},
                 out / REFERENCE_FILE, ref_meta)
    digits.metadata = meta
    if log is not None:
        log(f"trained the digit classifier in {seconds:.1f}s: test accuracy {accuracy:.2%}; wrote {out / CLASSIFIER_FILE} "
            f"and {out / REFERENCE_FILE}")
    return digits


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Regenerate the shipped digit classifier and reference statistics.")
    parser.add_argument("--out", default=str(ASSETS))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build_digit_assets(args.out, args.epochs, args.seed, log=print)


if __name__ == "__main__":
    main()
