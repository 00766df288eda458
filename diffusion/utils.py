"""Small shared helpers: broadcasting per-sample scalars and seeding."""
from __future__ import annotations

import torch
from torch import Tensor


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Reshape a per-sample tensor of shape (batch,) (or a scalar) so it broadcasts against (batch, *dims)."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def batch_time(t: float | Tensor, batch: int, device: torch.device | str, dtype: torch.dtype = torch.float64) -> Tensor:
    """A time value repeated for every sample: shape (batch,)."""
    t = torch.as_tensor(t, dtype=dtype, device=device)
    return t.expand(batch).clone() if t.ndim == 0 else t.to(device=device, dtype=dtype)


def sum_except_batch(x: Tensor) -> Tensor:
    return x.flatten(1).sum(1)
