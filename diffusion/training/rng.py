"""This rank's random streams during training, seeded from ``trainer.seed`` and saved in every checkpoint.

The noise and times of the loss and class-label dropout draw from ``noise`` (a ``torch.Generator`` on the training
device); dropout layers from torch's global RNG; random flips from ``data`` (the loader's generator). Each stream
is seeded per rank from (seed, name, rank), so that a stopped and resumed run continues exactly as if it had
never stopped.
"""
from __future__ import annotations

import torch
from torch import Tensor

from diffusion.utils import derive_seed


class RandomStreams:
    """The noise generator on ``device``, the data generator (CPU) and the global CPU/CUDA RNGs of one rank."""

    def __init__(self, device: torch.device):
        self.device = device
        self.noise = torch.Generator(device)  # the loss's times and noise, class-label dropout
        self.data = torch.Generator()         # the loader's random flips

    def seed(self, seed: int, rank: int, *resumed_at: int) -> None:
        """Seed every stream from (seed, stream, rank) (``resumed_at``: the step, for fresh streams in a run
        resumed by another number of processes)."""
        self.noise.manual_seed(derive_seed(seed, "noise", rank, *resumed_at))
        self.data.manual_seed(derive_seed(seed, "data", rank, *resumed_at))
        torch.manual_seed(derive_seed(seed, "global", rank, *resumed_at))  # dropout layers
        if self.device.type == "cuda":
            torch.cuda.manual_seed(derive_seed(seed, "cuda", rank, *resumed_at))

    def state(self) -> dict[str, Tensor]:
        """The four states as tensors (what a checkpoint holds for each rank)."""
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.empty(0, dtype=torch.uint8)
        return {"torch": torch.get_rng_state(), "cuda": cuda, "generator": self.noise.get_state(),
                "data": self.data.get_state()}

    def load(self, state: dict[str, Tensor]) -> None:
        torch.set_rng_state(state["torch"])
        if self.device.type == "cuda" and state["cuda"].numel():
            torch.cuda.set_rng_state(state["cuda"], self.device)
        self.noise.set_state(state["generator"].to(self.noise.get_state().device))
        self.data.set_state(state["data"])


__all__ = ["RandomStreams"]
