from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.data import DataError, ImageFolder, describe

RED, BLUE = (255, 0, 0), (0, 0, 255)


def halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, : width // 2] = RED
    array[:, width // 2 :] = BLUE
    return Image.fromarray(array)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "nested" / "deeper").mkdir(parents=True)
    halves(40, 20).save(tmp_path / "wide.png")  # shorter side 20 -> 8: 16x8, crop keeps columns 4..11
    halves(200, 120).save(tmp_path / "nested" / "big.PNG")  # 120 >= 2*8: box-halved twice before bicubic
    halves(24, 24).save(tmp_path / "nested" / "deeper" / "square.jpg", quality=95)
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_finds_images_recursively_and_crops_to_square(folder):
    data = ImageFolder(folder, image_size=8, flip=False, as_uint8=True)
    assert len(data) == 3 and (data.channels, data.image_size, data.num_classes, data.name) == (3, 8, None, "folder")
    assert describe(data) == {"channels": 3, "image_size": 8, "num_classes": None}
    for i in range(len(data)):
        image, label = data[i]
        assert image.shape == (3, 8, 8) and image.dtype == torch.uint8 and label == -1
        # Center crop of a red|blue split stays red on the left, blue on the right; the columns
        # next to the seam are bicubic blends (and JPEG ringing), so compare the outer two columns.
        left, right = image[:, :, :2].float().mean((1, 2)), image[:, :, -2:].float().mean((1, 2))
        assert torch.allclose(left, torch.tensor(RED, dtype=torch.float32), atol=6), (data.files[i], left)
        assert torch.allclose(right, torch.tensor(BLUE, dtype=torch.float32), atol=6), (data.files[i], right)


def test_scaled_output_is_in_range(folder):
    data = ImageFolder(folder, image_size=8, flip=False)
    raw = ImageFolder(folder, image_size=8, flip=False, as_uint8=True)
    image, _ = data[0]
    assert image.dtype == torch.float32 and image.min() >= -1 and image.max() <= 1
    assert torch.equal(image, raw[0][0].float() / 127.5 - 1)


def test_grayscale(folder):
    data = ImageFolder(folder, image_size=8, channels=1, flip=False, as_uint8=True)
    image, _ = data[0]
    assert image.shape == (1, 8, 8) and data.channels == 1
    # PIL's L = 0.299 R + 0.587 G + 0.114 B: red -> 76, blue -> 29.
    assert abs(image[0, :, 0].float().mean() - 76) <= 1 and abs(image[0, :, -1].float().mean() - 29) <= 1


def test_flips_are_mirrors_and_train_only(folder):
    train = ImageFolder(folder, image_size=8, flip=True, as_uint8=True)
    plain = ImageFolder(folder, image_size=8, flip=False, as_uint8=True)[0][0]
    torch.manual_seed(0)
    outcomes = set()
    for _ in range(30):
        image = train[0][0]
        assert torch.equal(image, plain) or torch.equal(image, plain.flip(-1))
        outcomes.add(torch.equal(image, plain))
    assert outcomes == {True, False}  # P(one orientation 30 times) = 2**-29
    test = ImageFolder(folder, image_size=8, flip=True, split="test", as_uint8=True)
    assert not test.flip and all(torch.equal(test[0][0], plain) for _ in range(10))


def test_split_subfolders_are_used_when_present(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    for k in range(3):
        halves(16, 16).save(tmp_path / "train" / f"{k}.png")
    halves(16, 16).save(tmp_path / "test" / "0.bmp")
    assert len(ImageFolder(tmp_path, 8, split="train")) == 3
    assert len(ImageFolder(tmp_path, 8, split="test")) == 1


def test_missing_empty_and_bad_arguments_are_one_line_errors(tmp_path):
    cases = [
        (dict(root=tmp_path / "absent", image_size=8), "does not exist: set data.root"),
        (dict(root=tmp_path, image_size=8), "no images"),
        (dict(root=tmp_path, image_size=8, channels=4), "channels must be 1"),
        (dict(root=tmp_path, image_size=0), "image_size must be a positive integer"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(DataError, match=expected) as info:
            ImageFolder(**kwargs)
        assert "\n" not in str(info.value)


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    data = ImageFolder(tmp_path, image_size=8)
    with pytest.raises(DataError, match="broken.png"):
        data[0]


def test_crop_keeps_aspect_instead_of_squashing(tmp_path):
    # 40x20, red in the left quarter: resizing the shorter side to 8 gives 16x8 with red in
    # columns 0..3, and the center crop (columns 4..11) is blue. Squashing to 8x8 would keep red.
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :10], array[:, 10:] = RED, BLUE
    Image.fromarray(array).save(tmp_path / "quarter.png")
    image, _ = ImageFolder(tmp_path, image_size=8, flip=False, as_uint8=True)[0]
    assert image[0, :, 1:].max() <= 8 and image[2, :, 1:].min() >= 247  # column 0 may blend across the seam
