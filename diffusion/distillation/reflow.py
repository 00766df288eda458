r"""Reflow (Liu, Gong & Liu 2022, "Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified
Flow", sec. 2.2): straighten a trained rectified flow by training it again on its own couplings.

The teacher's ODE maps each prior draw x_T to a sample x_0 = ODE(x_T). Rectified flow on the *coupled* pairs,
x_t = (1 - t) x_0 + t x_T with the velocity target x_T - x_0 (flow matching with the paired x_T in place of
independent noise), learns a flow whose paths cross less, so they are straighter and a one- or two-step Euler
solve lands near the end: the paper's 1-rectified flow becomes 2-rectified flow. Any of our ODE samplers then
samples it with 1-2 steps.

``draw_couplings`` writes the pairs to disk in seeded batches (batch i from ``derive_seed(seed, "couplings", i)``), one
atomic NPZ file per batch, so an interrupted draw resumes where it stopped and gives the same pairs;
``CouplingDataset`` serves them as (x_0, label, x_T) items, and ``losses.FlowMatching`` takes the x_T of a batch
as its ``noise``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from diffusion.errors import ConfigError
from diffusion.processes.base import Process
from diffusion.samplers.spec import SamplerSpec
from diffusion.utils import derive_seed


def coupling_file(out_dir: str | os.PathLike, index: int) -> Path:
    return Path(out_dir) / f"couplings_{index:05d}.npz"


@torch.no_grad()
def draw_couplings(process: Process, teacher: Callable[..., Tensor], spec: SamplerSpec, n: int,
                   shape: tuple[int, ...], out_dir: str | os.PathLike, *, seed: int = 0, batch_size: int = 256,
                   device: torch.device | str = "cpu", progress: bool = True,
                   log: Callable[[str], None] | None = None) -> list[Path]:
    """``n`` pairs (x_T, x_0 = the teacher's ``spec`` solve from x_T) of per-sample ``shape``, written to
    ``out_dir/couplings_<i>.npz`` (float32 ``x_T``, ``x0``); batches already on disk are kept, so a rerun
    resumes. Batch i draws x_T from its own generator: the pairs depend only on (seed, i)."""
    if int(n) != n or n < 1:
        raise ConfigError(f"distill.pairs={n} must be a positive number of couplings")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    batch_size = min(int(batch_size), int(n))
    num_batches = -(-int(n) // batch_size)
    todo = [i for i in range(num_batches) if not coupling_file(out, i).exists()]
    if todo and log is not None:
        log(f"drawing {n} couplings with {spec.name}, {spec.steps} steps, in {num_batches} batches "
            f"({len(todo)} to go) into {out} ...")
    for i in tqdm(todo, disable=not progress, desc="couplings"):
        count = min(batch_size, int(n) - i * batch_size)
        generator = torch.Generator().manual_seed(derive_seed(seed, "couplings", i))
        x_T = process.prior_sample((count,) + tuple(shape), generator).to(device)
        x0 = spec(process, teacher, None, x_T=x_T)
        tmp = coupling_file(out, i).with_suffix(".tmp.npz")
        np.savez(tmp, x_T=x_T.float().cpu().numpy(), x0=x0.float().cpu().numpy())
        os.replace(tmp, coupling_file(out, i))
    return [coupling_file(out, i) for i in range(num_batches)]


class CouplingDataset(Dataset):
    """The pairs of ``draw_couplings`` as items (x_0, label, x_T): x_0 and x_T float32 (C, H, W), label -1
    (unconditional). No flips: a flipped x_0 is not the end of its x_T's path."""

    name = "couplings"

    def __init__(self, out_dir: str | os.PathLike):
        files = sorted(Path(out_dir).glob("couplings_*.npz"))
        if not files:
            raise ConfigError(f"no couplings in {out_dir}: draw them first (train.py distill=reflow draws them)")
        x_T, x0 = [], []
        for f in files:
            with np.load(f, allow_pickle=False) as data:
                x_T.append(torch.from_numpy(data["x_T"]))
                x0.append(torch.from_numpy(data["x0"]))
        self.x_T, self.x0 = torch.cat(x_T), torch.cat(x0)
        self.channels, self.image_size = int(self.x0.shape[1]), int(self.x0.shape[-1])
        self.num_classes = None
        self.split = "train"

    def __len__(self) -> int:
        return self.x0.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int, Tensor]:
        return self.x0[index], -1, self.x_T[index]

    def __repr__(self) -> str:
        return f"CouplingDataset(n={len(self)}, shape={tuple(self.x0.shape[1:])})"


__all__ = ["draw_couplings", "CouplingDataset", "coupling_file"]
