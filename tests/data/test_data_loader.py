from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Subset

from diffusion.data import DataError, ImageFolder, InMemoryImages, InMemoryLoader, MNIST5k, describe, make_loader


def tiny(n: int = 10, flip: bool = False, as_uint8: bool = False, split: str = "train") -> InMemoryImages:
    """n distinct 1x4x4 images: image k holds 10k + column index, so the order and flips are visible."""
    images = (torch.arange(4, dtype=torch.uint8).expand(n, 1, 4, 4) + 10 * torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1)).clone()
    return InMemoryImages(images, torch.arange(n) % 3, num_classes=3, split=split, flip=flip, as_uint8=as_uint8)


def epoch_order(loader) -> list[int]:
    """Which tiny() images an epoch visits, in order (read back from the pixel values)."""
    order = []
    for images, _ in loader:
        pixels = images if images.dtype == torch.uint8 else ((images + 1) * 127.5).round()
        order += (pixels[:, 0, 0, 0] // 10).int().tolist()
    return order


def test_in_memory_loader_matches_dataloader_exactly():
    data = tiny(10)
    fast = make_loader(data, batch_size=4, shuffle=False, drop_last=False)
    slow = make_loader(data, batch_size=4, shuffle=False, drop_last=False, in_memory=False)
    assert isinstance(fast, InMemoryLoader) and isinstance(slow, DataLoader)
    assert len(fast) == len(slow) == 3
    for (a, la), (b, lb) in zip(fast, slow, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb) and a.dtype == torch.float32 and la.dtype == torch.int64
    raw = tiny(10, as_uint8=True)
    assert torch.equal(next(iter(make_loader(raw, 10, shuffle=False)))[0], raw.images)


def test_shuffled_epochs_are_seeded_permutations():
    data = tiny(10)
    for in_memory in (True, False):
        loader = make_loader(data, batch_size=3, shuffle=True, seed=5, in_memory=in_memory)
        assert len(loader) == 3  # drop_last: 9 of 10 items per epoch
        first, second = epoch_order(loader), epoch_order(loader)
        assert len(set(first)) == 9 and len(set(second)) == 9 and first != second  # P(same) = 1/10!
        again = make_loader(data, batch_size=3, shuffle=True, seed=5, in_memory=in_memory)
        assert epoch_order(again) == first
        other = make_loader(data, batch_size=3, shuffle=True, seed=6, in_memory=in_memory)
        assert epoch_order(other) != first


@pytest.mark.parametrize("in_memory", [True, False])
def test_distributed_ranks_get_disjoint_shards(in_memory):
    data = tiny(10)
    loaders = [
        make_loader(data, batch_size=2, shuffle=True, seed=1, distributed=True, num_replicas=2, rank=r, in_memory=in_memory)
        for r in (0, 1)
    ]
    for epoch in (0, 1):
        orders = []
        for loader in loaders:
            loader.sampler.set_epoch(epoch)
            orders.append(epoch_order(loader))
        assert len(orders[0]) == len(orders[1]) == 4  # 5 items per rank, drop_last -> 2 batches of 2
        assert not set(orders[0]) & set(orders[1])
        if epoch == 0:
            first = orders
    assert first != orders  # set_epoch reshuffles


def test_distributed_sampler_partitions_everything_without_drop_last():
    data = tiny(10)
    seen = []
    for rank in (0, 1):
        loader = make_loader(data, batch_size=5, distributed=True, num_replicas=2, rank=rank, drop_last=False)
        seen += epoch_order(loader)
    assert sorted(seen) == list(range(10))


def test_distributed_without_process_group_is_a_one_line_error():
    with pytest.raises(DataError, match="torch.distributed initialized") as info:
        make_loader(tiny(), batch_size=2, distributed=True)
    assert "\n" not in str(info.value)


def test_batched_flips_are_mirrors_and_follow_the_seed():
    data = tiny(10, flip=True, as_uint8=True)
    loader = make_loader(data, batch_size=10, shuffle=False, seed=3)
    images, _ = next(iter(loader))
    flipped = [not torch.equal(images[k], data.images[k]) for k in range(10)]
    for k in range(10):
        assert torch.equal(images[k], data.images[k].flip(-1) if flipped[k] else data.images[k])
    again, _ = next(iter(make_loader(data, batch_size=10, shuffle=False, seed=3)))
    assert torch.equal(images, again)
    columns = torch.arange(4, dtype=torch.uint8).expand(500, 1, 4, 4).clone()
    many = InMemoryImages(columns, torch.zeros(500), num_classes=None, flip=True, as_uint8=True)
    images, _ = next(iter(make_loader(many, 500, shuffle=False, seed=3)))
    share = (images[:, 0, 0, 0] == 3).float().mean()  # the first column holds 3 exactly when flipped
    assert 0.4 < share < 0.6  # Binomial(500, 1/2): 4.5 standard deviations either side


def test_worker_process_path():
    data = MNIST5k("test")
    assert isinstance(make_loader(data, batch_size=128, num_workers=1), InMemoryLoader)  # preloaded: no workers needed
    loader = make_loader(data, batch_size=128, shuffle=True, num_workers=1, seed=0, in_memory=False)
    assert isinstance(loader, DataLoader) and len(loader) == 3
    batches = list(loader)
    assert all(images.shape == (128, 1, 28, 28) and labels.shape == (128,) for images, labels in batches)


def test_folder_goes_through_dataloader(tmp_path):
    from PIL import Image

    for k in range(5):
        Image.new("RGB", (12, 10), (k * 40, 0, 0)).save(tmp_path / f"{k}.png")
    loader = make_loader(ImageFolder(tmp_path, image_size=8), batch_size=2, shuffle=True)
    assert isinstance(loader, DataLoader)
    images, labels = next(iter(loader))
    assert images.shape == (2, 3, 8, 8) and labels.tolist() == [-1, -1]
    with pytest.raises(DataError, match="in_memory=True needs a preloaded data set"):
        make_loader(ImageFolder(tmp_path, image_size=8), batch_size=2, in_memory=True)


def test_describe_unwraps_subsets():
    assert describe(Subset(tiny(), [0, 1])) == {"channels": 1, "image_size": 4, "num_classes": 3}
