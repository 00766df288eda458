"""The one exception the data sets raise for anything a user can fix (missing files, bad arguments)."""
from __future__ import annotations

from diffusion.errors import DataError

__all__ = ["DataError"]
