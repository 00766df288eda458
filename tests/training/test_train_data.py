"""The resumable sampler: epoch e's order depends only on (seed, e), and an epoch can start mid-way."""
from __future__ import annotations

import torch

from diffusion.training.data import ResumableSampler, make_train_loader

from .helpers import tiny_images


def test_start_mid_epoch_continues_the_same_permutation():
    data = list(range(50))
    sampler = ResumableSampler(data, seed=3)
    sampler.set_position(epoch=2, start=0)
    full = list(sampler)
    assert sorted(full) == data and len(sampler) == 50
    sampler.set_position(epoch=2, start=17)
    assert list(sampler) == full[17:] and len(sampler) == 33
    sampler.set_position(epoch=3, start=0)
    assert list(sampler) != full                                   # a new order each epoch
    again = ResumableSampler(data, seed=3)
    again.set_position(epoch=2, start=0)
    assert list(again) == full                                     # no hidden state


def test_ranks_get_disjoint_shares():
    data = list(range(50))
    shares = []
    for rank in range(3):
        s = ResumableSampler(data, num_replicas=3, rank=rank, seed=0)
        s.set_position(1, 0)
        shares.append(list(s))
    assert all(len(x) == 16 for x in shares)                       # 50 // 3, tail dropped
    assert len(set().union(*shares)) == 48


def test_loader_batches_and_flip_generator():
    images = tiny_images(n=40, flip=True)
    g = torch.Generator().manual_seed(0)
    loader, sampler = make_train_loader(images, batch_size=8, seed=0, generator=g)
    sampler.set_position(0, 0)
    batches = list(loader)
    assert len(batches) == 5 and batches[0][0].shape == (8, 1, 8, 8) and batches[0][0].dtype == torch.float32
    # restoring the flip generator and the position reproduces the tail of the epoch exactly
    g2 = torch.Generator().manual_seed(0)
    loader2, sampler2 = make_train_loader(images, batch_size=8, seed=0, generator=g2)
    sampler2.set_position(0, 0)
    it = iter(loader2)
    next(it), next(it)
    state = g2.get_state()
    g3 = torch.Generator().set_state(state)
    loader3, sampler3 = make_train_loader(images, batch_size=8, seed=0, generator=g3)
    sampler3.set_position(0, 16)
    for (x_a, y_a), (x_b, y_b) in zip(batches[2:], loader3):
        assert torch.equal(x_a, x_b) and torch.equal(y_a, y_b)
