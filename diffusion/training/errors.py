"""The exceptions training raises for problems a user can fix; entry points print their one-line message."""
from __future__ import annotations

from diffusion.errors import ConfigError, TrainingError

__all__ = ["ConfigError", "TrainingError"]
