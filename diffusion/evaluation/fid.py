r"""FID (Heusel et al. 2017) with torch-fidelity's Inception-v3, the network of the original TensorFlow FID code.

    FID = ||mu_s - mu_r||^2 + tr(C_s + C_r - 2 (C_s C_r)^{1/2})

over the 2048-d pool features of samples (s) and of the data set's reference images (r, its train split).
torch-fidelity resizes like TensorFlow 1.x, so its numbers match the published ones; the Frechet distance itself
is ``frechet.frechet_distance``. Grayscale images are repeated to three channels.

The Inception weights come from the internet on first use (torch-fidelity's release URL, cached by torch.hub), or
from a local file (``weights=``). Offline and without the file, ``load_inception`` raises ``InceptionUnavailable``
with a one-line message, and callers report FID as n/a. The weights file is opened with ``weights_only=True``
first, so it cannot run code before torch-fidelity loads it.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from diffusion.errors import EvaluationError
from diffusion.evaluation.frechet import frechet_distance, gaussian_stats

INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
FEATURE = "2048"


class InceptionUnavailable(RuntimeError):
    """The Inception weights cannot be had (offline, no local file); the message is one line."""


def _hub_path(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _download(url: str, path: Path, timeout: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def inception_weights(weights: str | os.PathLike | None = None, url: str = INCEPTION_URL, timeout: float = 20.0) -> Path:
    """A local path to checked Inception weights: ``weights`` if given, else torch.hub's cache, downloading once."""
    path = Path(weights).expanduser() if weights else _hub_path(url)
    if not path.is_file():
        if weights:
            raise InceptionUnavailable(f"no Inception weights at {path}: set fid.inception_weights to torch-fidelity's "
                                       f"weights file ({os.path.basename(INCEPTION_URL)})")
        try:
            _download(url, path, timeout)
        except Exception as e:  # noqa: BLE001 - every download failure means the same thing to the user
            reason = str(getattr(e, "reason", e)).splitlines()[0][:100]
            raise InceptionUnavailable(f"FID unavailable: cannot download the Inception weights ({reason}); "
                                       f"put {os.path.basename(url)} in {path.parent} or set fid.inception_weights=<file>") from None
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise InceptionUnavailable(f"{path} is not a plain Inception state dict ({type(e).__name__}): delete it and retry") from None
    return path


def load_inception(weights: str | os.PathLike | None = None, url: str = INCEPTION_URL,
                   device: torch.device | str = "cpu") -> torch.nn.Module:
    """torch-fidelity's FID Inception-v3 returning the 2048-d pool features; raises ``InceptionUnavailable``."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise InceptionUnavailable("FID unavailable: torch-fidelity is not installed (pip install torch-fidelity)") from None
    path = inception_weights(weights, url)
    net = FeatureExtractorInceptionV3("inception-v3-compat", [FEATURE], feature_extractor_weights_path=str(path))
    return net.to(device).eval()


@torch.no_grad()
def inception_features(net: torch.nn.Module, images: Tensor, batch_size: int = 100,
                       device: torch.device | str = "cpu") -> Tensor:
    """2048-d features (n, 2048), float64, of uint8 images (n, C, H, W) with C = 1 or 3."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"FID takes uint8 images (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
    out = []
    for lo in range(0, len(images), batch_size):
        x = images[lo:lo + batch_size].to(device)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        out.append(net(x)[0].double().cpu())
    return torch.cat(out)


def fingerprint(images: Tensor) -> str:
    return hashlib.sha256(images.contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


def cached_stats(path: Path, compute: Callable[[], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """(mu, cov) from a safetensors cache file, or computed and stored there."""
    from safetensors.torch import load_file

    from diffusion.evaluation.digit_features import save_tensors

    if path.is_file():
        try:
            t = load_file(str(path))
            return t["mu"], t["cov"]
        except Exception:  # noqa: BLE001 - unreadable cache: recompute
            pass
    mu, cov = compute()
    save_tensors({"mu": mu, "cov": cov}, path, {})
    return mu, cov


class FID:
    """FID against fixed reference images, whose statistics are computed once and cached by content hash."""

    def __init__(self, net: torch.nn.Module, reference: Tensor, cache: Path | None = None, batch_size: int = 100,
                 device: torch.device | str = "cpu"):
        self.net, self.batch_size, self.device = net, batch_size, device

        def compute():
            return gaussian_stats(inception_features(net, reference, batch_size, device))

        if cache is None:
            self.ref_mu, self.ref_cov = compute()
        else:
            key = f"inception_stats_{fingerprint(reference)}_{len(reference)}.safetensors"
            self.ref_mu, self.ref_cov = cached_stats(Path(cache) / key, compute)

    def __call__(self, images: Tensor) -> float:
        if len(images) < 2:
            raise EvaluationError(f"FID needs at least 2 images, got {len(images)}")
        mu, cov = gaussian_stats(inception_features(self.net, images, self.batch_size, self.device))
        return frechet_distance(mu, cov, self.ref_mu, self.ref_cov)
