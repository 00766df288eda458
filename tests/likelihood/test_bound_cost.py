"""bound_cost: the network evaluations per image of one variational_bound, counted on the bound itself."""
from __future__ import annotations

import pytest
import torch

from diffusion import likelihood
from diffusion.likelihood.bound import SDE_T_SAMPLES
from diffusion.processes import DDPM, VESDE, VPSDE


class CountingModel:
    """eps = 0, counting calls and the images they carry (the bound batches all images into one call)."""

    def __init__(self):
        self.calls = self.images = 0

    def __call__(self, x, t, *args):
        self.calls += 1
        self.images += x.shape[0]
        return torch.zeros_like(x)


@pytest.mark.parametrize("process, t_samples", [(DDPM(num_steps=20), None), (DDPM(num_steps=20), 7),
                                                 (VPSDE(), 3), (VESDE(), 2), (VPSDE(), None)],
                         ids=["ddpm-all", "ddpm-7", "vp-3", "ve-2", "vp-default"])
def test_cost_equals_counted_evaluations(process, t_samples):
    x = torch.rand(3, 1, 2, 2) * 2 - 1
    model = CountingModel()
    _, stats = likelihood.variational_bound(process, model, x, t_samples=t_samples,
                                            generator=torch.Generator().manual_seed(0), return_stats=True)
    cost = likelihood.bound_cost(process, t_samples)
    assert model.calls == cost == stats["nfe"]
    assert model.images == cost * len(x)


def test_cost_closed_forms_and_bad_t_samples():
    assert likelihood.bound_cost(DDPM(num_steps=1000)) == 1000
    assert likelihood.bound_cost(VPSDE()) == 4 * SDE_T_SAMPLES == 1024
    assert likelihood.bound_cost(VESDE(), 10) == 40
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="t_samples"):
            likelihood.bound_cost(VPSDE(), bad)
