"""What a run leaves to look at: TensorBoard scalars and images, PNG sample grids, the resolved config.

Run folder layout (rank 0 writes it all):

    <run dir>/config.yaml                  resolved config (the one saved in every checkpoint)
    <run dir>/checkpoints/ckpt_<step>.pt   see checkpoint.py
    <run dir>/samples/step_<step>.png      sample grids from the EMA weights
    <run dir>/tb/                          TensorBoard: tensorboard --logdir <run dir>/tb
    <run dir>/.hydra/, train.log           Hydra's record of the command line, and the log
"""
from __future__ import annotations

import contextlib
import math
import sys
import threading
from pathlib import Path
from typing import Iterator

from torch import Tensor

from diffusion.errors import DiskFullError
from diffusion.files import disk_full, out_of_space
from diffusion.utils import write_atomic


def save_float_grid(images: Tensor, path: str | Path) -> Path:
    """Save float images in [-1, 1] of shape (n, C, H, W) as one PNG grid (about square); written atomically.
    (``runs.store.save_uint8_grid`` takes 8-bit images.)"""
    from torchvision.utils import save_image

    nrow = max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    unit = to_unit(images)
    return write_atomic(path, lambda f: save_image(unit, f, nrow=nrow, padding=2, format="png"))


#: the old name of ``save_float_grid``
save_grid = save_float_grid


def to_unit(images: Tensor) -> Tensor:
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2)


class RunLogger:
    """TensorBoard writer plus sample-grid PNGs; a silent stand-in when ``enabled`` is False (ranks > 0)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._writer = None
        self._broken = False  # the event file's disk filled: its writer can write nothing more
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            _quiet_writer_thread()
            with self._events():
                self._writer = SummaryWriter(log_dir=str(self.run_dir / "tb"))

    @contextlib.contextmanager
    def _events(self) -> Iterator[None]:
        """TensorBoard's writer thread keeps the OSError of a failed write and raises it at the next call here:
        a full disk becomes the one-line ``DiskFullError`` naming the event file."""
        try:
            yield
        except OSError as e:
            code = out_of_space(self.run_dir / "tb" / "events", e)
            if code is None:
                raise
            self._broken = True
            event_writer = getattr(getattr(self._writer, "file_writer", None), "event_writer", None)
            raise disk_full(getattr(event_writer, "_file_name", self.run_dir / "tb"), code) from None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._writer is None or self._broken:
            return
        with self._events():
            for name, value in values.items():
                self._writer.add_scalar(name, value, step)

    def grid(self, step: int, images: Tensor, tag: str = "samples") -> Path | None:
        """Write the grid as ``samples/step_<step>.png`` and to TensorBoard; returns the PNG path."""
        if not self.enabled:
            return None
        from torchvision.utils import make_grid

        path = save_float_grid(images, self.run_dir / "samples" / f"step_{step}.png")
        if self._writer is not None and not self._broken:
            nrow = max(1, int(math.ceil(math.sqrt(images.shape[0]))))
            with self._events():
                self._writer.add_image(tag, make_grid(to_unit(images), nrow=nrow, padding=2), step)
        return path

    def flush(self) -> None:
        if self._writer is not None and not self._broken:
            with self._events():
                self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file. Called while another error is on its way out (a checkpoint that did
        not fit), a failure here is dropped so that the first error is the one reported."""
        writer, self._writer = self._writer, None
        if writer is None or self._broken:
            return
        unwinding = sys.exc_info()[1] is not None  # close() in a finally: clause that an error passes through
        try:
            with self._events():
                writer.close()
        except DiskFullError:
            if not unwinding:
                raise


_HOOKED = [False]


def _quiet_writer_thread() -> None:
    """TensorBoard's writer thread dies on a full disk and Python prints its traceback; the same error is raised
    again in the main thread at the next write (and said there in one line), so that traceback is dropped."""
    if _HOOKED[0]:
        return
    _HOOKED[0] = True
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and out_of_space(".", args.exc_value) is not None:
            return
        previous(args)

    threading.excepthook = hook
