"""What a run leaves to look at: TensorBoard scalars and images, PNG sample grids, the resolved config.

Run folder layout (rank 0 writes it all):

    <run dir>/config.yaml                  resolved config (the one saved in every checkpoint)
    <run dir>/checkpoints/ckpt_<step>.pt   see checkpoint.py
    <run dir>/samples/step_<step>.png      sample grids from the EMA weights
    <run dir>/tb/                          TensorBoard: tensorboard --logdir <run dir>/tb
    <run dir>/.hydra/, train.log           Hydra's record of the command line, and the log
"""
from __future__ import annotations

import math
from pathlib import Path

from torch import Tensor


def save_grid(images: Tensor, path: str | Path) -> Path:
    """Save images in [-1, 1] of shape (n, C, H, W) as one PNG grid (about square)."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    save_image(to_unit(images), path, nrow=nrow, padding=2)
    return path


def to_unit(images: Tensor) -> Tensor:
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2)


class RunLogger:
    """TensorBoard writer plus sample-grid PNGs; a silent stand-in when ``enabled`` is False (ranks > 0)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tb"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._writer is None:
            return
        for name, value in values.items():
            self._writer.add_scalar(name, value, step)

    def grid(self, step: int, images: Tensor, tag: str = "samples") -> Path | None:
        """Write the grid as ``samples/step_<step>.png`` and to TensorBoard; returns the PNG path."""
        if not self.enabled:
            return None
        from torchvision.utils import make_grid

        path = save_grid(images, self.run_dir / "samples" / f"step_{step}.png")
        if self._writer is not None:
            nrow = max(1, int(math.ceil(math.sqrt(images.shape[0]))))
            self._writer.add_image(tag, make_grid(to_unit(images), nrow=nrow, padding=2), step)
        return path

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
