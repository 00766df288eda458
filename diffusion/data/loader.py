"""Batches for training: `make_loader` (DataLoader or the in-memory fast path) and `describe`.

Sampling order comes from a sampler seeded by `seed` (a DistributedSampler across processes),
so call `loader.sampler.set_epoch(epoch)` each epoch when distributed, exactly as with a DataLoader.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler, SequentialSampler

from .errors import DataError
from .memory import InMemoryImages
from diffusion.utils import derive_seed

def describe(dataset: Dataset) -> dict:
    """The shape facts a model needs: {channels, image_size, num_classes}."""
    while not hasattr(dataset, "channels") and hasattr(dataset, "dataset"):  # Subset and friends
        dataset = dataset.dataset
    return {"channels": dataset.channels, "image_size": dataset.image_size, "num_classes": dataset.num_classes}


class InMemoryLoader:
    """Batches of an `InMemoryImages` data set by one gather per batch, in the main process.

    A drop-in for `DataLoader` in a training loop: iterating yields (images, labels) tensors in the
    order of `sampler`, `len()` counts batches, and `sampler.set_epoch` works as usual. It costs no
    worker processes and no per-item Python calls; flips come from its own seeded generator.
    """

    def __init__(
        self,
        dataset: InMemoryImages,
        batch_size: int,
        sampler: Sampler[int],
        drop_last: bool = True,
        pin_memory: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.sampler = sampler
        self.drop_last = drop_last
        self.pin_memory = pin_memory
        self.generator = generator

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.as_tensor(list(self.sampler), dtype=torch.int64)
        stop = len(self) * self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            images, labels = self.dataset.batch(order[start : min(start + self.batch_size, stop)], self.generator)
            if self.pin_memory:
                images, labels = images.pin_memory(), labels.pin_memory()
            yield images, labels


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    distributed: bool = False,
    drop_last: bool = True,
    pin_memory: bool | None = None,
    persistent_workers: bool | None = None,
    *,
    num_replicas: int | None = None,
    rank: int | None = None,
    in_memory: bool | None = None,
) -> DataLoader | InMemoryLoader:
    """A seeded loader over `dataset`.

    Args:
        distributed: shard with a DistributedSampler over torch.distributed's world (or the
            explicit `num_replicas` / `rank`); each rank sees a disjoint part of every epoch.
        pin_memory, persistent_workers: default to on when CUDA is available (workers only if num_workers > 0).
        num_workers: worker processes for data sets decoded per item (ImageFolder).
        in_memory: batch an `InMemoryImages` data set (MNIST5k, MNIST, CIFAR10, NpzImages) by direct indexing
            (`InMemoryLoader`) instead of a DataLoader. Default: yes for such data sets, whatever
            num_workers says: one gather per batch in the main process outruns any worker
            (measured in benchmarks/train_speed.md). Pass False to force a DataLoader.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be positive, got {batch_size}: set a positive batch size")
    cuda = torch.cuda.is_available()
    pin_memory = cuda if pin_memory is None else pin_memory
    persistent_workers = (cuda if persistent_workers is None else persistent_workers) and num_workers > 0

    if distributed:
        if num_replicas is None or rank is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise DataError("distributed=True needs torch.distributed initialized: launch with torchrun, or set distributed=false")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        # Every rank shuffles with the same seed (so the shards are disjoint); flips and workers get their own.
        sampler = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
    else:
        rank = 0
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)) if shuffle else SequentialSampler(dataset)
    generator = torch.Generator().manual_seed(derive_seed(seed, "flips", rank))

    if in_memory is None:
        in_memory = isinstance(dataset, InMemoryImages)
    if in_memory:
        if not isinstance(dataset, InMemoryImages):
            raise DataError(f"in_memory=True needs a preloaded data set (MNIST5k, MNIST, CIFAR10, NpzImages), got {type(dataset).__name__}")
        return InMemoryLoader(dataset, batch_size, sampler, drop_last=drop_last, pin_memory=pin_memory, generator=generator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers,
        generator=generator,
    )
