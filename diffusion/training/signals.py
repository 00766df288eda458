"""A clean stop: SIGTERM / SIGINT (Ctrl-C) ask the training loop to save a checkpoint and stop after the current
step; a second Ctrl-C stops at once (KeyboardInterrupt)."""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

log = logging.getLogger(__name__)


class StopRequest:
    """Whether a stop was asked for, and by which signal; ``announce``: log it (the main rank)."""

    def __init__(self, announce: bool = True):
        self.signum: int | None = None
        self.announce = announce

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a stop after the current step (as SIGTERM does)."""
        self.signum = signum

    def name(self) -> str:
        """The signal's name; a stop agreed on because another rank got the signal was SIGTERM as far as this
        rank knows."""
        return signal.Signals(self.signum if self.signum is not None else signal.SIGTERM).name

    @contextlib.contextmanager
    def handlers(self) -> Iterator[None]:
        """SIGTERM and SIGINT handled while inside (the main thread only: elsewhere signals cannot be caught)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_signal(signum, frame):
            if self.signum is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.signum = signum
            if self.announce:
                log.warning(f"{signal.Signals(signum).name} received: saving a checkpoint after this step, then stopping")

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


__all__ = ["StopRequest"]
