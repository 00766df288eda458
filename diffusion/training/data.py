"""The training batches, in an order that a resumed run can pick up mid-epoch.

Epoch e's order is a permutation drawn from a generator seeded with (seed + e), split across the ranks
as by ``DistributedSampler``; a run that stops after k batches of that epoch restarts the same
permutation at batch k. So the order depends only on (seed, epoch, position), never on how many times
the run was stopped. Random flips draw from the loader's own generator, whose state goes into each
checkpoint (exact with the in-memory loader; with worker processes the worker seeds follow it).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from diffusion.data import InMemoryImages, InMemoryLoader
from diffusion.training.errors import TrainingError


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled, tail dropped) that can start an epoch at a given position."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Iterate epoch ``epoch`` from its ``start``-th index (of this rank's share) on."""
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


def make_train_loader(dataset: Dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                      num_workers: int = 0, pin_memory: bool = False,
                      generator: torch.Generator | None = None) -> tuple[DataLoader | InMemoryLoader, ResumableSampler]:
    """(loader, sampler) yielding (images, labels) batches of ``batch_size`` (this rank's share).

    In-memory data sets (MNIST5k, MNIST, CIFAR10) are batched by one gather per batch in this process
    (diffusion.data.InMemoryLoader); others go through a DataLoader with ``num_workers`` workers.
    """
    sampler = ResumableSampler(dataset, num_replicas=world_size, rank=rank, seed=seed)
    if isinstance(dataset, InMemoryImages) and num_workers == 0:
        return InMemoryLoader(dataset, batch_size, sampler, drop_last=True, pin_memory=pin_memory, generator=generator), sampler
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=True,
                        pin_memory=pin_memory, persistent_workers=num_workers > 0, generator=generator)
    return loader, sampler


def split_batch(batch_size: int, grad_accum: int, world_size: int) -> tuple[int, int]:
    """(grad_accum, micro-batch): the global ``batch_size`` of one optimizer step split over the processes and the
    accumulation steps."""
    if grad_accum < 1 or batch_size < 1 or batch_size % (world_size * grad_accum):
        raise TrainingError(f"trainer.batch_size={batch_size} must be a positive multiple of processes x grad_accum "
                            f"= {world_size} x {grad_accum}: change trainer.batch_size or trainer.grad_accum")
    return grad_accum, batch_size // (world_size * grad_accum)


class TrainBatches:
    """This rank's micro-batches of ``micro_batch`` images (``make_train_loader``'s arguments), from any position."""

    def __init__(self, dataset: Dataset, micro_batch: int, seed: int, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, pin_memory: bool = False, generator: torch.Generator | None = None):
        self.loader, self.sampler = make_train_loader(dataset, micro_batch, seed, rank, world_size, num_workers,
                                                      pin_memory, generator)
        self.micro_batch = micro_batch
        self.per_epoch = self.sampler.num_samples // micro_batch
        if self.per_epoch < 1:
            raise TrainingError(f"the data set's {len(dataset)} images make no batch of {micro_batch} per process: "
                                "lower trainer.batch_size")

    def after(self, done: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """(images, labels) micro-batches forever, starting after the run's first ``done``; a data set whose items
        carry more (reflow's couplings: their x_T) yields that too, as further tensors."""
        while True:
            epoch, k = divmod(done, self.per_epoch)
            self.sampler.set_position(epoch, k * self.micro_batch)
            for batch in self.loader:
                yield tuple(batch)
                done += 1
