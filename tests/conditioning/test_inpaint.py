"""``diffusion.inpaint`` against the exact conditional of a Gaussian mixture (``helpers.py``), and its contract:
known entries returned exactly, RePaint's segments equal to the plain sampler, one-line errors for bad input.

Scores (n = 2000 completions of one observation, fixed seeds, so every run gives the same numbers): FD, the
Frechet distance of the missing coordinates to the exact conditional's moments (exact draws: 0.0010 on average,
``helpers.floor``), and the mixture-weight error, the total variation between the exact conditional weights and the
samples' mean responsibilities (exact draws: 0.011). Ignoring the observation altogether (unconditional samples)
scores FD 0.024 and weight error 0.166: the tolerances below sit under that, so a conditioning that does nothing fails.
"""
from __future__ import annotations

import pytest
import torch

from diffusion import inpaint, processes, sample
from diffusion.conditioning.segments import CALLS_BEFORE_STATE, run_segment, sampler_grid
from diffusion.samplers import SAMPLERS, CountingModel

from .helpers import KNOWN, floor, observation, scores, target

N = 2000
MISSING = ~KNOWN


@pytest.fixture(scope="module")
def setup():
    gm = target()
    x = observation(gm)
    return gm, x, gm.conditional(x, KNOWN)


def _complete(gm, x, process, sampler, steps, method, seed=0, **kw):
    model = CountingModel(gm.eps_model(process))
    out = inpaint(process, model, x.float().repeat(N, 1), KNOWN, sampler=sampler, steps=steps, method=method,
                  generator=torch.Generator().manual_seed(seed), **kw)
    return out, model.nfe


def test_floor_and_control(setup):
    """The reference numbers quoted above: exact draws and the unconditional sampler."""
    gm, _, cond = setup
    fd0, w0 = floor(cond, N)
    assert fd0 < 0.0015 and w0 < 0.015
    vp = processes.VPSDE()
    u = sample(vp, gm.eps_model(vp), (N, 4), "ddim", 100, torch.Generator().manual_seed(0))
    fd, w = scores(u[:, MISSING], cond)
    assert fd > 0.02 and w > 0.15


REPAINT = dict(jump_length=5, resamples=5)
# (process, sampler, options, steps, method, FD tolerance, weight-error tolerance); measured values in the comment.
# Tolerances: ~1.5x the measured value (runs are seeded; the margin absorbs platform differences in rounding).
FAST = [
    ("vpsde", "ddim", {}, 50, "replacement", 0.016, 0.14),  # 0.0106, 0.097
    ("vpsde", "ddim", {"eta": 1.0}, 50, "repaint", 0.0045, 0.05),  # 0.0029, 0.032 at 250 NFE
]
SLOW = [
    ("vpsde", "ddim", {}, 200, "replacement", 0.02, 0.16),  # 0.0143, 0.114
    ("vpsde", "ddim", {}, 200, "repaint", 0.003, 0.07),  # 0.0019, 0.047
    ("vpsde", "ddim", {"eta": 1.0}, 200, "replacement", 0.008, 0.12),  # 0.0054, 0.079
    ("vpsde", "ddim", {"eta": 1.0}, 200, "repaint", 0.0015, 0.03),  # 0.0008, 0.019
    ("vpsde", "euler_maruyama", {}, 200, "replacement", 0.011, 0.14),  # 0.0070, 0.092
    ("vpsde", "euler_maruyama", {}, 200, "repaint", 0.002, 0.06),  # 0.0013, 0.040
    ("vpsde", "pc", {}, 200, "replacement", 0.0055, 0.11),  # 0.0037, 0.075
    ("vpsde", "pc", {}, 200, "repaint", 0.0015, 0.036),  # 0.0009, 0.024
    ("vpsde", "dpmpp_2m", {}, 50, "replacement", 0.024, 0.16),  # 0.0159, 0.123
    ("vpsde", "dpmpp_2m", {}, 50, "repaint", 0.009, 0.08),  # 0.0057, 0.054
    ("ddpm", "ddpm", {}, 200, "replacement", None, None),
    ("ddpm", "ddpm", {}, 200, "repaint", None, None),
]


def _process(name):
    return processes.VPSDE() if name == "vpsde" else processes.DDPM("linear", 1000)


def _check(setup, process, sampler, options, steps, method, fd_tol, w_tol):
    gm, x, cond = setup
    kw = dict(options, **(REPAINT if method == "repaint" else {}))
    out, nfe = _complete(gm, x, _process(process), sampler, steps, method, **kw)
    assert torch.equal(out[:, KNOWN], x.float()[KNOWN].expand(N, -1))
    fd, w = scores(out[:, MISSING], cond)
    print(f"{process} {sampler} {options} {steps} {method}: NFE {nfe}, FD {fd:.4f}, weight error {w:.3f}")
    return fd, w, nfe


@pytest.mark.parametrize("process,sampler,options,steps,method,fd_tol,w_tol", FAST)
def test_against_exact_conditional(setup, process, sampler, options, steps, method, fd_tol, w_tol):
    fd, w, _ = _check(setup, process, sampler, options, steps, method, fd_tol, w_tol)
    assert fd < fd_tol and w < w_tol


@pytest.mark.slow
@pytest.mark.parametrize("process,sampler,options,steps,method,fd_tol,w_tol", SLOW)
def test_against_exact_conditional_slow(setup, process, sampler, options, steps, method, fd_tol, w_tol):
    fd, w, nfe = _check(setup, process, sampler, options, steps, method, fd_tol, w_tol)
    if fd_tol is None:  # DDPM's own sampler: same bounds as its twin, DDIM eta = 1 on VP
        fd_tol, w_tol = (0.008, 0.12) if method == "replacement" else (0.0015, 0.03)
    assert fd < fd_tol and w < w_tol


@pytest.mark.slow
@pytest.mark.parametrize("sampler,options", [("ddim", {}), ("ddim", {"eta": 1.0}), ("euler_maruyama", {}),
                                             ("pc", {}), ("dpmpp_2m", {})])
def test_repaint_halves_the_weight_error(setup, sampler, options):
    """At 200 steps replacement's weight error is 0.075-0.12, well above the floor (0.011), and it does not
    shrink with more steps: the replaced score is biased. RePaint (j = 5, r = 5) at least halves it."""
    rows = {m: _check(setup, "vpsde", sampler, options, 200, m, None, None) for m in ("replacement", "repaint")}
    assert rows["repaint"][1] < 0.5 * rows["replacement"][1]
    assert rows["repaint"][0] < rows["replacement"][0]


# ---- the contract, for every sampler ------------------------------------------------------------------
def _runs_on(sampler):
    return "ddpm" if sampler == "ddpm" else "vpsde"


FIXED_GRID = [s for s in SAMPLERS if s != "ode"]
#: samplers that carry history from step to step (a RePaint segment restarts it): add new multistep samplers here
WITH_HISTORY = {"dpmpp_2m", "dpmpp_3m", "unipc", "ipndm", "dpmpp_2m_sde"}


@pytest.mark.parametrize("method", ["replacement", "repaint"])
@pytest.mark.parametrize("sampler", FIXED_GRID)
def test_known_entries_are_returned_exactly(setup, sampler, method):
    gm, _, _ = setup
    process = _process(_runs_on(sampler))
    x = gm.sample(6, torch.Generator().manual_seed(1)).float()
    mask = torch.rand(6, 4, generator=torch.Generator().manual_seed(2)) < 0.5
    mask[:, 0], mask[:, 1] = True, False  # every row has something known and something missing
    kw = dict(jump_length=2, resamples=2) if method == "repaint" else {}
    out = inpaint(process, gm.eps_model(process), x, mask, sampler=sampler, steps=6, method=method,
                  generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(out[mask], x[mask]) and torch.isfinite(out).all()
    assert not torch.equal(out[~mask], x[~mask])


@pytest.mark.parametrize("sampler", [s for s in FIXED_GRID if s not in WITH_HISTORY])
def test_repaint_without_resampling_is_replacement(setup, sampler):
    """resamples=1 walks the grid in segments of jump_length and never goes back: for a sampler without history
    across steps, the same draws in the same order give the same numbers as one replacement run. This is the check
    that ``segments.CALLS_BEFORE_STATE`` is right for a sampler (a Heun sampler needs 1 there)."""
    gm, x, _ = setup
    process = _process(_runs_on(sampler))
    xk = x.float().repeat(8, 1)
    runs = [inpaint(process, gm.eps_model(process), xk, KNOWN, sampler=sampler, steps=9, method=m,
                    generator=torch.Generator().manual_seed(0), **kw)
            for m, kw in (("replacement", {}), ("repaint", dict(jump_length=4, resamples=1)))]
    torch.testing.assert_close(runs[1], runs[0], rtol=0, atol=1e-6)


def test_dpmpp_2m_segments_restart_its_history(setup):
    """dpmpp_2m's second-order extrapolation uses the previous x0_pred, which a new segment does not have; the
    segmented run differs, but only by the first-order restarts (small against the spread of the samples)."""
    gm, x, _ = setup
    vp = processes.VPSDE()
    xk = x.float().repeat(64, 1)
    a, b = (inpaint(vp, gm.eps_model(vp), xk, KNOWN, sampler="dpmpp_2m", steps=20, method=m,
                    generator=torch.Generator().manual_seed(0), **kw)
            for m, kw in (("replacement", {}), ("repaint", dict(jump_length=10, resamples=1))))
    gap = (a - b)[:, MISSING].norm(dim=1).median()
    assert 0 < gap < 0.2


@pytest.mark.parametrize("sampler", FIXED_GRID)
def test_segments_compose_to_the_full_run(setup, sampler):
    """Walking the grid as [0, 3], [3, end] with ``run_segment`` gives the sampler's own result (deterministic
    settings; stochastic samplers with a fixed generator, whose draws come in the same order)."""
    gm, _, _ = setup
    process = _process(_runs_on(sampler))
    model = gm.eps_model(process)
    x = process.prior_sample((16, 4), torch.Generator().manual_seed(0))
    grid, offset = sampler_grid(process, sampler, 8, x)
    assert len(grid) == 8 + offset
    full = SAMPLERS[sampler](process, model, x, 8, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    mid = run_segment(process, model, x, sampler, grid, offset, 0, 3, g)
    end = run_segment(process, model, mid, sampler, grid, offset, 3, None, g)
    if sampler in WITH_HISTORY:  # history restarts at the segment boundary: close, not equal
        assert (end - full).norm(dim=1).median() < 0.2
    else:
        torch.testing.assert_close(end, full, rtol=0, atol=1e-6)
    assert CALLS_BEFORE_STATE.get(sampler, 0) in (0, 1)


# ---- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask,kwargs,message", [
    (torch.ones(3, dtype=torch.bool), {}, "does not fit images of shape"),
    (torch.ones(6, 4), {}, "does not fit images of shape"),
    (torch.ones(4), {}, "every entry of a sample as known"),
    (torch.zeros(4), {}, "no entry of a sample as known"),
    (torch.tensor([1.0, 0.5, 0.0, 0.0]), {}, "only 0 (missing) and 1 (known)"),
    (KNOWN, {"method": "paint"}, "unknown inpainting method 'paint'"),
    (KNOWN, {"jump_length": 5}, "options of method='repaint'"),
    (KNOWN, {"method": "repaint", "sampler": "ode"}, "does not walk one fixed time grid"),
    (KNOWN, {"method": "repaint", "resamples": 0}, "resamples >= 1"),
    (KNOWN, {"sampler": "ddim", "foo": 1}, "unknown option(s) foo for sampler 'ddim'"),
])
def test_bad_input_is_one_line(setup, mask, kwargs, message):
    gm, x, _ = setup
    vp = processes.VPSDE()
    with pytest.raises(ValueError) as info:
        inpaint(vp, gm.eps_model(vp), x.float().repeat(5, 1), mask, steps=4, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
