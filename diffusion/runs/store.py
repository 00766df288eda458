"""Samples on disk: uint8 conversion, PNG grids, and a batch store that streams, resumes and gathers.

File format (the convention of OpenAI's guided-diffusion evaluation suite, which FID tools read):
``samples.npz`` holds ``arr_0``, uint8 images (N, H, W, C), and for class-conditional models ``arr_1``, int64 labels (N,).

``BatchStore`` writes one ``batches/batch_<i>.npz`` per batch, atomically (a temporary file renamed into place),
so a run killed at any moment leaves only complete batches; rerunning the same command skips them. A
``manifest.json`` records what was asked for (checkpoint, sampler, options, seed, batch size): a rerun that asks
for something else is refused instead of mixing samples of two settings in one file.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from diffusion.errors import EvaluationError
from diffusion.utils import write_atomic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as None and other non-JSON values as strings: strict JSON for any reader."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


def to_uint8(x: Tensor) -> Tensor:
    """Images in [-1, 1] (N, C, H, W) to uint8 (N, C, H, W): the exact inverse of the data's u / 127.5 - 1."""
    return ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def nchw_to_nhwc(images: Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def nhwc_to_nchw(images: np.ndarray | Tensor) -> Tensor:
    return torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).contiguous()


def save_uint8_grid(images: Tensor, path: str | os.PathLike, nrow: int | None = None, padding: int = 2) -> Path:
    """A square-ish PNG grid of uint8 images (N, C, H, W); written atomically. (``training.logging`` has its own
    grid writer for the model's float images in [-1, 1].)"""
    from torchvision.utils import make_grid

    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"save_uint8_grid takes uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    grid = make_grid(images.cpu(), nrow=nrow, padding=padding, pad_value=255)  # (C', H', W') uint8
    array = grid.permute(1, 2, 0).numpy()
    if images.shape[1] == 1:
        array = array[..., 0]
    path = Path(path)
    write_atomic(path, lambda f: Image.fromarray(array).save(f, format="PNG"))
    return path


#: the old name of ``save_uint8_grid`` (public API, kept as an alias)
save_grid = save_uint8_grid


def save_npz(path: str | os.PathLike, images_nhwc: np.ndarray, labels: np.ndarray | None = None) -> Path:
    """``arr_0`` = uint8 images (N, H, W, C), ``arr_1`` = labels if given; written atomically."""
    arrays = [np.asarray(images_nhwc, dtype=np.uint8)] + ([np.asarray(labels, dtype=np.int64)] if labels is not None else [])
    path = Path(path)
    write_atomic(path, lambda f: np.savez(f, *arrays), needed=sum(a.nbytes for a in arrays))
    return path


def load_npz(path: str | os.PathLike) -> tuple[Tensor, Tensor | None]:
    """uint8 images (N, C, H, W) and labels (or None) from an ``arr_0``/``arr_1`` (or ``images``/``labels``) npz."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise EvaluationError("not an archive of arrays")
        with loaded as f:
            keys = list(f.keys())
            img_key = "arr_0" if "arr_0" in keys else "images" if "images" in keys else None
            if img_key is None:
                raise EvaluationError(f"{path} has no arr_0 or images array (keys: {', '.join(keys) or 'none'}): "
                                 "save samples as np.savez(path, images_nhwc_uint8)")
            images = f[img_key]
            lab_key = "arr_1" if "arr_1" in keys else "labels" if "labels" in keys else None
            labels = torch.as_tensor(f[lab_key]) if lab_key else None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:  # EvaluationError is a ValueError
        if str(e).startswith(str(path)):  # our own message: already one line
            raise
        raise EvaluationError(f"{path} is not a readable .npz ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise EvaluationError(f"{path}: expected uint8 images (N, H, W, C), got {images.dtype} {images.shape}")
    if images.shape[-1] not in (1, 3) and images.shape[1] in (1, 3):  # tolerate NCHW
        return torch.as_tensor(images), labels
    return nhwc_to_nchw(images), labels


def load_folder(path: str | os.PathLike) -> Tensor:
    """Every image file in a folder (sorted by name) as uint8 (N, C, H, W); grayscale stays 1 channel."""
    files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EvaluationError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    arrays = []
    for p in files:
        with Image.open(p, formats=IMAGE_FORMATS) as im:  # no decoder that starts external programs (EPS)
            a = np.asarray(im.convert("L") if im.mode in ("L", "1", "I;16", "I") else im.convert("RGB"))
        arrays.append(a[..., None] if a.ndim == 2 else a)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise EvaluationError(f"images in {path} differ in size or channels ({', '.join(map(str, sorted(shapes)))}): resize them first")
    return nhwc_to_nchw(np.stack(arrays))


def load_images(path: str | os.PathLike) -> tuple[Tensor, Tensor | None]:
    """uint8 images (N, C, H, W) and labels from an ``.npz`` of samples or a folder of image files."""
    p = Path(path)
    if p.is_dir():
        return load_folder(p), None
    if p.is_file():
        return load_npz(p)
    raise EvaluationError(f"no samples at {p}: pass samples=<file.npz> or samples=<folder of images>")


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``manifest.json`` a ``BatchStore`` wrote in ``out_dir``: what drew its samples (checkpoint, sampler,
    steps, options, seed, batch size), which may differ from what the run's config names."""
    return json.loads((Path(out_dir) / "manifest.json").read_text())


class BatchStore:
    """Batches of samples in ``<out>/batches/``: written one file per batch, skipped when present, gathered at the end."""

    def __init__(self, out_dir: str | os.PathLike, manifest: dict[str, Any]):
        self.out_dir = Path(out_dir)
        self.batch_dir = self.out_dir / "batches"
        self.manifest = json.loads(json.dumps(manifest, sort_keys=True, default=str))
        self.manifest_path = self.out_dir / "manifest.json"

    def open(self) -> "BatchStore":
        """Create the folder, or check that the batches already there were made with the same settings."""
        if self.manifest_path.exists():
            old = read_manifest(self.out_dir)
            differs = sorted(k for k in set(old) | set(self.manifest) if old.get(k) != self.manifest.get(k))
            if differs:
                raise EvaluationError(f"{self.out_dir} holds samples made with other settings ({', '.join(differs)} differ): "
                                 "pass a new out=<folder> or delete that one")
        else:
            self.batch_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.manifest_path, lambda f: f.write(json.dumps(self.manifest, indent=2, sort_keys=True).encode()))
        self.batch_dir.mkdir(parents=True, exist_ok=True)
        return self

    def path(self, index: int) -> Path:
        return self.batch_dir / f"batch_{index:06d}.npz"

    def done(self, index: int) -> bool:
        return self.path(index).is_file()

    def count(self, index: int) -> int:
        """Images in batch ``index`` (0 if absent or unreadable: it is then made again)."""
        if not self.done(index):
            return 0
        try:
            with np.load(self.path(index), allow_pickle=False) as f:
                return int(f["arr_0"].shape[0])
        except Exception:  # noqa: BLE001 - a damaged batch file is simply redone
            return 0

    def write(self, index: int, images: Tensor, labels: Tensor | None = None) -> Path:
        """uint8 images (N, C, H, W), stored NHWC."""
        return save_npz(self.path(index), nchw_to_nhwc(images), None if labels is None else labels.cpu().numpy())

    def read(self, index: int) -> tuple[Tensor, Tensor | None]:
        return load_npz(self.path(index))

    def gather(self, num_batches: int, path: str | os.PathLike | None = None) -> tuple[Path, Tensor, Tensor | None]:
        """Concatenate batches 0..num_batches-1 into ``samples.npz`` (NHWC); returns (path, images NCHW, labels)."""
        missing = [i for i in range(num_batches) if not self.count(i)]
        if missing:
            raise EvaluationError(f"{len(missing)} batch file(s) missing in {self.batch_dir} (first: {missing[0]}): rerun the same command")
        parts = [self.read(i) for i in range(num_batches)]
        images = torch.cat([p[0] for p in parts])
        labels = torch.cat([p[1] for p in parts]) if parts and parts[0][1] is not None else None
        out = save_npz(path or self.out_dir / "samples.npz", nchw_to_nhwc(images), None if labels is None else labels.numpy())
        return out, images, labels
