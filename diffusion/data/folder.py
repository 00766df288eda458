"""Any folder of images, searched recursively, resized and center-cropped to a square.

Images are decoded per item (a folder may not fit in memory), so use DataLoader workers for
large folders. Flips (train split only) are the only randomness: torch's RNG in the loading process.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from diffusion.buildable import buildable

from .errors import DataError
from .memory import check_split, to_unit_range

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
FORMATS = ("PNG", "JPEG", "WEBP", "BMP")


def find_images(root: Path) -> list[Path]:
    """Every image file under `root` (any depth), in a sorted, reproducible order."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def center_crop_square(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size`, then cut the central size x size square.

    Large reductions first halve the image with a box filter, then finish with bicubic, as in
    Dhariwal & Nichol 2021 (guided-diffusion): a single bicubic step from far above aliases.
    """
    while min(image.size) >= 2 * size:
        image = image.reduce(2)
    scale = size / min(image.size)
    width, height = (max(size, round(side * scale)) for side in image.size)
    image = image.resize((width, height), resample=Image.Resampling.BICUBIC)
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


@buildable
class ImageFolder(Dataset):
    """Unlabelled images from a folder: items are (image (C, size, size) in [-1, 1], -1).

    Args:
        root: folder searched recursively for png/jpg/jpeg/webp/bmp. If `root/<split>` is a
            folder, that split's images come from it; otherwise every split reads all of `root`.
        image_size: side of the square output.
        channels: 3 (RGB) or 1 (grayscale).
        flip: random horizontal flips, train split only.
        as_uint8: return raw uint8 (C, size, size) instead of float32 in [-1, 1].
    """

    name = "folder"
    num_classes = None

    def __init__(
        self, root: str, image_size: int, channels: int = 3, flip: bool = True, split: str = "train", as_uint8: bool = False
    ) -> None:
        check_split(self.name, split)
        if channels not in (1, 3):
            raise DataError(f"folder: channels must be 1 (grayscale) or 3 (RGB), got {channels}: set data.channels=1 or 3")
        if int(image_size) != image_size or image_size < 1:
            raise DataError(f"folder: image_size must be a positive integer, got {image_size!r}: set data.image_size=64")
        root_path = Path(os.fspath(root)).expanduser()
        if not root_path.is_dir():
            raise DataError(f"image folder {root} does not exist: set data.root=/path/to/images")
        if (root_path / split).is_dir():
            root_path = root_path / split
        self.files = find_images(root_path)
        if not self.files:
            raise DataError(
                f"no images ({'/'.join(e[1:] for e in EXTENSIONS)}) under {root_path}: set data.root to a folder that holds some"
            )
        self.root = str(root_path)
        self.split = split
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.flip = bool(flip) and split == "train"
        self.as_uint8 = bool(as_uint8)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> Tensor:
        """Image `index` as uint8 (C, size, size), resized and cropped, before any flip."""
        path = self.files[index]
        try:
            # only these decoders: others (EPS) would start external programs on a file's say-so
            with Image.open(path, formats=FORMATS) as image:
                # JPEG only: decode at a reduced scale that still covers image_size (much faster for large photos).
                image.draft("RGB" if self.channels == 3 else "L", (self.image_size, self.image_size))
                image = image.convert("RGB" if self.channels == 3 else "L")
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"cannot read image {path} ({error}): delete or fix that file") from None
        array = np.array(center_crop_square(image, self.image_size), dtype=np.uint8)
        return torch.from_numpy(array.reshape(self.image_size, self.image_size, self.channels)).permute(2, 0, 1).contiguous()

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.load(index)
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return (image if self.as_uint8 else to_unit_range(image)), -1

    def __repr__(self) -> str:
        return f"ImageFolder(root={self.root!r}, n={len(self)}, image_size={self.image_size}, channels={self.channels}, flip={self.flip})"
