"""Reflow against closed forms. Rectified flow carries Gaussian data N(mu, diag(v)) by a linear map (the exact flow
map of ``toy.GaussianMixture.flow_map``), so its couplings (x_T, x_0) lie on straight lines that never cross: the
reflowed velocity is x_T - x_0 along each, and one Euler step lands on the flow's end. Plain flow matching on
independent noise instead learns the 1-rectified flow, whose one Euler step is the posterior mean, a blur."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from diffusion import sample
from diffusion.distillation import CouplingDataset, draw_couplings
from diffusion.errors import ConfigError
from diffusion.losses import FlowMatching
from diffusion.parameterization import EpsModel
from diffusion.processes import RectifiedFlow
from diffusion.samplers import SamplerSpec
from diffusion.toy import GaussianMixture

MU = torch.tensor([0.5, -0.3], dtype=torch.float64)
VAR = torch.tensor([0.09, 0.25], dtype=torch.float64)
GAUSSIAN = GaussianMixture(torch.ones(1), MU[None], torch.diag(VAR)[None])


class AffineNet(nn.Module):
    """out = A(t) x + b(t), affine in x (the exact velocity of Gaussian data is)."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(8, 64), nn.SiLU(), nn.Linear(64, 4))

    def forward(self, x, label, class_labels=None):
        t = label.float().reshape(-1, 1) / 999  # rectified flow embeds 999 t
        a, b = self.mlp(torch.cat([f(t * k) for f in (torch.sin, torch.cos) for k in (1, 2, 3, 4)], 1)).chunk(2, 1)
        return a * x + b


def train(process, pairs: CouplingDataset, independent: bool = False, steps: int = 500) -> EpsModel:
    """Flow matching on the couplings' x_0, with their x_T as the noise (reflow) or independent noise."""
    torch.manual_seed(0)
    model = EpsModel(AffineNet(), process, prediction="velocity")
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    loss_fn, gen = FlowMatching(process), torch.Generator().manual_seed(0)
    for _ in range(steps):
        index = torch.randint(0, len(pairs.x0), (256,), generator=gen)
        noise = None if independent else pairs.x_T[index]
        loss = loss_fn(model, pairs.x0[index], generator=gen, noise=noise).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_reflow_makes_one_euler_step_land_on_the_flow_s_end(tmp_path):
    process = RectifiedFlow()
    teacher = GAUSSIAN.eps_model(process)
    spec = SamplerSpec("dpmpp_3m", steps=40)
    draw_couplings(process, teacher, spec, 2048, (2,), tmp_path, seed=0, batch_size=1024, progress=False)
    pairs = CouplingDataset(tmp_path)
    # the teacher's couplings are the exact flow map, to the solver's error
    exact = GAUSSIAN.flow_map(process, pairs.x_T, process.t_max, process.t_min).float()
    assert float((pairs.x0 - exact).norm(dim=1).max()) < 3e-3  # float32 pairs, 40 steps
    reflowed = train(process, pairs)
    plain = train(process, pairs, independent=True)

    x_T = process.prior_sample((4000, 2), torch.Generator().manual_seed(9))
    end = GAUSSIAN.flow_map(process, x_T, process.t_max, process.t_min).float()
    errors = {}
    for name, model in (("reflow", reflowed), ("plain", plain)):
        with torch.no_grad():
            x0 = sample(process, model, None, "ddim", steps=1, x_T=x_T)
        errors[name] = float((x0 - end).norm(dim=1).mean()) / float(VAR.sqrt().mean())
    # one Euler step of the reflowed model: within 5% of the data's std of the flow's end (measured 0.026); plain flow matching's
    # one step is the posterior mean E[x_0 | x_T] = mu, a whole std away
    assert errors["reflow"] < 0.05, errors
    assert errors["plain"] > 0.8, errors


def test_couplings_are_seeded_and_resume(tmp_path):
    process = RectifiedFlow()
    teacher = GAUSSIAN.eps_model(process)
    spec = SamplerSpec("dpmpp_2m", steps=4)
    files = draw_couplings(process, teacher, spec, 10, (2,), tmp_path / "a", seed=3, batch_size=4, progress=False)
    assert [f.name for f in files] == ["couplings_00000.npz", "couplings_00001.npz", "couplings_00002.npz"]
    first = CouplingDataset(tmp_path / "a")
    assert first.x0.shape == (10, 2) and first.x_T.shape == (10, 2)
    files[1].unlink()  # an interrupted draw: the missing batch is drawn again, the same
    kept = files[0].stat().st_mtime_ns
    draw_couplings(process, teacher, spec, 10, (2,), tmp_path / "a", seed=3, batch_size=4, progress=False)
    assert files[0].stat().st_mtime_ns == kept
    again = CouplingDataset(tmp_path / "a")
    assert torch.equal(again.x0, first.x0) and torch.equal(again.x_T, first.x_T)
    other = draw_couplings(process, teacher, spec, 10, (2,), tmp_path / "b", seed=4, batch_size=4, progress=False)
    with np.load(other[0]) as data:
        assert not np.array_equal(data["x_T"], first.x_T[:4].numpy())
    x0, label, x_T = first[3]
    assert label == -1 and torch.equal(x_T, first.x_T[3])


def test_couplings_errors(tmp_path):
    with pytest.raises(ConfigError, match="no couplings"):
        CouplingDataset(tmp_path)
    with pytest.raises(ConfigError, match="positive"):
        draw_couplings(RectifiedFlow(), None, SamplerSpec("ddim", 1), 0, (2,), tmp_path)
