"""benchmarks/lib: the prototype Hutch++ divergence against exact traces, and a record's sections rewritten one at
a time."""
from __future__ import annotations

import torch

from diffusion import likelihood, processes
from diffusion.likelihood import ode
from diffusion.toy import GaussianMixture


def _linear_map(d: int, seed: int):
    """x -> x A^T per sample, built so that autograd sees it (tr of d out / d x = tr A), and A."""
    A = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = torch.randn(3, d, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64).requires_grad_(True)
    return x, x @ A.T, A


def test_hutchpp_is_exact_when_its_sketch_spans_the_space(bench_lib):
    x, out, A = _linear_map(5, seed=0)
    v = torch.randn(15, *x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)  # m = 5 = d
    est = bench_lib.hutchpp.hutchpp_divergence(out, x, v)
    assert est.shape == (15, 3)
    torch.testing.assert_close(est, torch.full_like(est, float(torch.trace(A))), rtol=1e-10, atol=1e-10)


def test_hutchpp_is_unbiased_with_a_smaller_sketch(bench_lib):
    x, out, A = _linear_map(8, seed=3)
    g = torch.Generator().manual_seed(4)
    draws = torch.stack([bench_lib.hutchpp.hutchpp_divergence(out, x, torch.randn(6, *x.shape, generator=g,
                                                                                   dtype=torch.float64))[0]
                         for _ in range(500)])  # m = 2 of d = 8: the estimate is random
    assert float(draws.std()) > 0.1
    stderr = draws.std(0) / 500 ** 0.5
    assert ((draws.mean(0) - torch.trace(A)).abs() < 4 * stderr).all(), (draws.mean(0), torch.trace(A), stderr)


def test_hutchpp_in_ode_nll_matches_the_exact_trace_and_restores_hutchinson(bench_lib):
    """With 3m probes and m = d the sketch is exact: ode_nll then equals its exact-trace run on the same ODE."""
    gm = GaussianMixture.random(2, k=3, scale=(0.1, 0.3), seed=0)
    vp = processes.VPSDE()
    x = gm.sample(6, torch.Generator().manual_seed(1))
    exact = likelihood.ode_nll(vp, gm.eps_model(vp), x, divergence="exact", rtol=1e-6, atol=1e-6)
    original = ode.hutchinson_divergence
    with bench_lib.hutchpp.hutchpp_in_ode_nll():
        sketched = likelihood.ode_nll(vp, gm.eps_model(vp), x, divergence="hutchinson", probes=6, rtol=1e-6, atol=1e-6,
                                      generator=torch.Generator().manual_seed(2))
    assert ode.hutchinson_divergence is original
    torch.testing.assert_close(sketched, exact, rtol=1e-6, atol=1e-6)


def test_write_section_rewrites_only_its_own_section(bench_lib, tmp_path):
    record = tmp_path / "record.md"
    record.write_text("# title\n\n<!-- a -->\nold a\n<!-- /a -->\nby hand\n<!-- b -->\nold b\n<!-- /b -->\ntail\n")
    bench_lib.report.write_section(record, "a", ["new a", "more"])
    assert record.read_text() == ("# title\n\n<!-- a -->\nnew a\nmore\n<!-- /a -->\nby hand\n<!-- b -->\nold b\n"
                                  "<!-- /b -->\ntail\n")
    bench_lib.report.write_section(record, "c", ["c"])
    assert record.read_text().endswith("tail\n\n<!-- c -->\nc\n<!-- /c -->\n")
    assert [p.name for p in tmp_path.iterdir()] == ["record.md"]  # no temporary file left behind
