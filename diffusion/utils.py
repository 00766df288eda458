"""Small shared helpers."""
from __future__ import annotations

from torch import Tensor


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Reshape a per-sample tensor of shape (batch,) (or a scalar) so it broadcasts against (batch, *dims)."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))
