"""Batched, seeded generation: reproducible, independent of n and of how the run was split up or resumed."""
from __future__ import annotations

import pytest
import torch

from diffusion.runs.generate import batch_generator, class_labels_for, generate
from diffusion.runs.store import BatchStore
from diffusion.processes import DDPM, VPSDE
from diffusion.toy import GaussianMixture

SHAPE = (1, 2, 2)


@pytest.fixture(scope="module")
def mixture():
    return GaussianMixture.random(4, k=2, spread=0.5, scale=(0.05, 0.2), seed=0)


@pytest.mark.parametrize("sampler", ["ddim", "euler_maruyama"])
def test_same_seed_same_images_for_any_n(mixture, sampler):
    process = VPSDE()
    model = mixture.eps_model(process)
    a, _, stats = generate(process, model, 10, SHAPE, sampler=sampler, steps=8, seed=0, batch_size=4)
    b, _, _ = generate(process, model, 13, SHAPE, sampler=sampler, steps=8, seed=0, batch_size=4)
    c, _, _ = generate(process, model, 10, SHAPE, sampler=sampler, steps=8, seed=1, batch_size=4)
    assert a.dtype == torch.uint8 and a.shape == (10, *SHAPE)
    assert torch.equal(a, b[:10])  # the last, partial batch is drawn in full and cropped
    assert not torch.equal(a, c)
    assert stats.nfe == 8 and stats.batches_run == 3 and stats.images_run == 10


def test_batches_have_independent_streams():
    draws = [torch.randn(3, generator=batch_generator(seed, i)) for seed in (0, 1) for i in (0, 1)]
    assert len({tuple(d.tolist()) for d in draws}) == 4
    assert torch.equal(torch.randn(3, generator=batch_generator(5, 2)), torch.randn(3, generator=batch_generator(5, 2)))


def test_interrupted_run_resumes_to_the_same_images(mixture, tmp_path):
    process = DDPM(num_steps=100)
    model = mixture.eps_model(process)
    kwargs = dict(sampler="ddim", steps=5, seed=3, batch_size=3, options={"eta": 1.0})
    full, _, _ = generate(process, model, 8, SHAPE, **kwargs)

    calls = {"n": 0}

    def dies_in_batch_two(x, t, **kw):
        calls["n"] += 1
        if calls["n"] > 5 + 2:  # batch 0 (5 calls) completes, batch 1 dies mid-way
            raise KeyboardInterrupt
        return model(x, t, **kw)

    store = BatchStore(tmp_path, {"run": 1}).open()
    with pytest.raises(KeyboardInterrupt):
        generate(process, dies_in_batch_two, 8, SHAPE, store=store, **kwargs)
    assert store.count(0) == 3 and store.count(1) == 0
    assert not list(store.batch_dir.glob(".*.tmp"))  # no half-written batch left behind
    _, _, stats = generate(process, model, 8, SHAPE, store=store, **kwargs)
    assert stats.batches_skipped == 1 and stats.batches_run == 2
    _, images, _ = store.gather(3)
    assert torch.equal(images, full)
    # rerunning the finished command samples nothing
    _, _, stats = generate(process, model, 8, SHAPE, store=store, **kwargs)
    assert stats.batches_run == 0 and stats.batches_skipped == 3


def test_class_labels():
    assert class_labels_for(5, None, None) is None
    assert class_labels_for(5, 3, None).tolist() == [0, 1, 2, 0, 1]
    assert class_labels_for(4, 10, 7).tolist() == [7, 7, 7, 7]
    assert class_labels_for(5, 10, [1, 2]).tolist() == [1, 2, 1, 2, 1]
    with pytest.raises(ValueError, match="unconditional"):
        class_labels_for(5, None, [1])
    with pytest.raises(ValueError, match="outside 0..9"):
        class_labels_for(5, 10, [10])


def test_conditional_generation_passes_the_labels(mixture):
    process = VPSDE()
    seen = []

    def model(x, t, class_labels=None):
        seen.append(class_labels.tolist())
        return mixture.eps_model(process)(x, t)

    _, labels, _ = generate(process, model, 5, SHAPE, sampler="ddim", steps=2, batch_size=5, num_classes=3)
    assert labels.tolist() == [0, 1, 2, 0, 1] and seen == [[0, 1, 2, 0, 1]] * 2
    with pytest.raises(ValueError, match="unconditional"):
        generate(process, mixture.eps_model(process), 2, SHAPE, sampler="ddim", steps=2, guidance_scale=2.0)
