r"""A prototype Hutch++ divergence for ``ode_nll`` (Meyer, Musco, Musco & Woodruff 2021, "Hutch++: Optimal
Stochastic Trace Estimation"): the probe budget spent on a rank-m sketch whose trace is exact, plus Hutchinson on
the deflated rest. Kept here, with its own vector-Jacobian products, until it earns a place in
``diffusion/likelihood/ode.py`` as ``divergence="hutchpp"``."""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from diffusion.likelihood import ode


def vjps(out: Tensor, x: Tensor, vs: Tensor) -> Tensor:
    """[v^T d out/d x for v in vs] stacked, shape (n, *x.shape): one batched backward pass, or one per vector
    where an op of the model has no batching rule."""
    try:
        return torch.autograd.grad(out, x, vs, retain_graph=True, is_grads_batched=True)[0]
    except (RuntimeError, NotImplementedError):
        return torch.stack([torch.autograd.grad(out, x, v, retain_graph=True)[0] for v in vs])


def hutchpp_divergence(out: Tensor, x: Tensor, v: Tensor) -> Tensor:
    r"""Hutch++ estimate of tr(d out/d x) from the probes v (3m, *x.shape): with M = (d out/d x)^T (M u is one
    vector-Jacobian product; tr M = tr of the Jacobian), S = v[:m], G = v[m:2m], Q = orth(M S) per sample,

        tr(M) ~ tr(Q^T M Q) + 1/m tr(G'^T M G'),   G' = (I - Q Q^T) G,

    exact on the rank-m part that M S captures, Hutchinson on the rest; unbiased because G is independent of Q.
    3m products in two batched calls. Returns (3m, batch) copies of the estimate (the shape ode_nll expects)."""
    m = v.shape[0] // 3
    batch = x.shape[0]
    S, G = v[:m].flatten(2), v[m:2 * m].flatten(2)  # (m, batch, d)
    MS = vjps(out, x, S.reshape((m,) + x.shape)).flatten(2)
    Q = torch.linalg.qr(MS.permute(1, 2, 0))[0]  # (batch, d, m)
    Gp = G - torch.einsum("bdm,bem,kbe->kbd", Q, Q, G)
    probes = torch.cat([Q.permute(2, 0, 1), Gp])  # (2m, batch, d)
    MP = vjps(out, x, probes.reshape((2 * m,) + x.shape)).flatten(2)
    quad = (MP * probes).sum(-1)  # (2m, batch)
    est = quad[:m].sum(0) + quad[m:].sum(0) / m
    return est.expand(v.shape[0], batch)


@contextlib.contextmanager
def hutchpp_in_ode_nll():
    """Run ``ode_nll(divergence="hutchinson")`` with the Hutch++ divergence in place of plain Hutchinson: the same
    solver and ODE, only the divergence estimate differs (the prototype of the proposed ``divergence="hutchpp"``)."""
    original = ode.hutchinson_divergence
    ode.hutchinson_divergence = hutchpp_divergence
    try:
        yield
    finally:
        ode.hutchinson_divergence = original
