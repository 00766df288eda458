"""Masks for images from a short name: the region to fill in (``center``, ``left``, ``top``, ``random:<p>``) or a PNG.

Returned as bool tensors that are True where a pixel is *known* (the convention of ``inpaint``), shaped
(N or 1, 1, H, W) so that one mask covers all channels of a pixel.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from diffusion.errors import ConfigError

NAMES = ("center", "left", "top", "random:<p>", "<file>.png")


def build_mask(spec: str, n: int, height: int, width: int, generator: torch.Generator | None = None) -> Tensor:
    """The known pixels for ``spec``: ``center`` fills in the central square of half the side, ``left`` / ``top``
    the left / top half, ``random:p`` a random fraction p of the pixels (drawn per image from ``generator``), and a
    PNG of the images' size its white pixels (value >= 128; diffusers' convention: white = inpaint)."""
    spec = str(spec).strip()
    known = torch.ones(1, 1, height, width, dtype=torch.bool)
    if spec == "center":
        known[..., height // 4: height - height // 4, width // 4: width - width // 4] = False
    elif spec == "left":
        known[..., : width // 2] = False
    elif spec == "top":
        known[..., : height // 2, :] = False
    elif spec.startswith("random:"):
        try:
            p = float(spec.split(":", 1)[1])
        except ValueError:
            p = -1.0
        if not 0 < p < 1:
            raise ConfigError(f"mask={spec}: give the fraction of pixels to fill in as random:<p> with 0 < p < 1")
        known = torch.rand(n, 1, height, width, generator=generator) >= p
    elif spec.lower().endswith(".png"):
        known = _from_png(Path(spec), height, width)
    else:
        raise ConfigError(f"unknown mask {spec!r}; use one of {', '.join(NAMES)}")
    return known


def _from_png(path: Path, height: int, width: int) -> Tensor:
    if not path.is_file():
        raise ConfigError(f"no mask image at {path}: pass mask=<file.png> (white = fill in) or a named mask")
    try:
        with Image.open(path, formats=("PNG", "BMP", "WEBP", "JPEG")) as im:  # decoders that run no program
            array = np.asarray(im.convert("L"))
    except OSError as e:
        raise ConfigError(f"mask {path} is not a readable image ({type(e).__name__})") from None
    if array.shape != (height, width):
        raise ConfigError(f"mask {path} is {array.shape[1]}x{array.shape[0]} pixels but the images are "
                         f"{width}x{height}: resize the mask to match")
    return torch.as_tensor(array < 128)[None, None]


__all__ = ["build_mask", "NAMES"]
