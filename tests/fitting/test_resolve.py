"""``resolve_sampler``: a configured sampler's references (``fitted``, schedule files) turned into values, the label
that names the walk, the one-line refusals, and the layout the registry declares."""
from __future__ import annotations

import pytest
import torch

from diffusion import processes
from diffusion.errors import ConfigError
from diffusion.fitting import on_fitted_grid, on_fixed_grid, resolve_sampler, save_timesteps
from diffusion.samplers import SOLVER, SamplerSpec, layout
from diffusion.samplers.registry import DENOISE, grid_size, solver_layout_samplers

FIT = dict(n=16, fine_steps=20, refine=0)


def test_the_layout_is_declared_where_the_sampler_registers():
    assert solver_layout_samplers() == ("dpmpp_2m", "dpmpp_3m", "unipc", "ipndm", "dpmpp_2m_sde", "consistency")
    assert layout("ddim") == DENOISE and layout("unipc") == SOLVER
    assert grid_size("ddim", 5) == 5 and grid_size("unipc", 5) == 6
    from diffusion.samplers.gits import SOLVER_LAYOUT  # the old hand-kept tuple's path: now the registry's answer

    assert SOLVER_LAYOUT == solver_layout_samplers()


def test_fitted_grid_resolves_to_values_and_names_the_walk(gm, tmp_path):
    """``sampler=fewstep sampler.steps=5`` (unipc, timesteps=fitted) samples into ``unipc_5_fitted``, not the schedule
    file's stem ``unipc_unipc_5``; a grid fitted with other settings sits beside it and adds its digest."""
    process = processes.VPSDE()
    model = gm.eps_model(process)
    configured = SamplerSpec("unipc", steps=5, order=3, timesteps="fitted")
    assert configured.label == "unipc_fitted"  # unresolved: only what it names
    spec = resolve_sampler(configured, process, model, (2,), schedules_dir=tmp_path, **FIT)
    assert spec.label == "unipc_5_fitted" and spec.sources == {"timesteps": str(tmp_path / "unipc_5.json")}
    assert isinstance(spec.options["timesteps"], list) and len(spec.options["timesteps"]) == 6
    assert spec.options["order"] == 3 and spec.replace(steps=7).label == "unipc_5_fitted"  # steps: the grid's
    other = resolve_sampler(configured, process, model, (2,), schedules_dir=tmp_path, **{**FIT, "refine": 1})
    digest = other.sources["timesteps"].rsplit("_", 1)[1].removesuffix(".json")
    assert len(digest) == 8 and other.label == f"unipc_5_fitted_{digest}"


def test_labels_of_the_other_walks(tmp_path):
    process = processes.VPSDE()
    assert SamplerSpec("unipc", steps=5).label == "unipc_5"
    assert SamplerSpec("unipc", timesteps=[1.0, 0.5, 0.001]).label == "unipc_2_grid"
    path = save_timesteps(tmp_path / "unipc_6.json", [1.0, 0.6, 0.3, 0.1, 0.03, 0.01, 0.001])
    spec = resolve_sampler(SamplerSpec("unipc", timesteps=str(path)), process, fit=False)
    assert spec.label == "unipc_unipc_6" and spec.options["timesteps"][1] == 0.6
    assert spec.replace(timesteps=[1.0, 0.001]).label == "unipc_1_grid"  # a new grid drops the file's name


def test_resolved_spec_is_unchanged_without_references():
    spec = SamplerSpec("ddim", steps=7, eta=0.5)
    assert resolve_sampler(spec, processes.VPSDE(), fit=False) is spec


def test_refusals_are_one_line():
    process = processes.VPSDE()
    with pytest.raises(ConfigError, match=r"timesteps=fitted \(a grid fitted to the run\) is resolved by sample.py"):
        resolve_sampler(SamplerSpec("unipc", timesteps="fitted"), process, fit=False)
    with pytest.raises(ConfigError, match="set sampler.timesteps=fitted too"):
        resolve_sampler(SamplerSpec("ipndm", coefficients="fitted"), process, lambda x, t: x, (2,),
                        schedules_dir="unused")
    with pytest.raises(ConfigError, match="order must be"):  # the rest is checked before any fit
        resolve_sampler(SamplerSpec("unipc", order=9, timesteps="fitted"), process, lambda x, t: x, (2,),
                        schedules_dir="unused")


def test_fixed_and_fitted_walks_of_a_spec():
    spec = SamplerSpec("ipndm", steps=4, coefficients="fitted", spacing="uniform")
    assert on_fixed_grid(spec).options == {"coefficients": None, "spacing": "uniform"}
    assert on_fitted_grid(spec).options == {"coefficients": "fitted", "spacing": "uniform", "timesteps": "fitted"}
    plain = SamplerSpec("ddim", steps=4)
    assert on_fixed_grid(plain) is plain


def test_samplers_never_import_the_fitting_layer():
    """The samplers sit below fitting: no module of ``diffusion/samplers`` imports ``diffusion.fitting`` (the old
    paths reach it by name, on first use, as compatibility aliases), and those aliases are the fitting's own."""
    import ast
    from pathlib import Path

    import diffusion.fitting as fitting
    import diffusion.samplers as samplers

    for path in Path(samplers.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith("diffusion.fitting") for n in names), path.name
    from diffusion.evaluation.schedule import fitted_schedule
    from diffusion.samplers import fit_coefficients, optimize_timesteps
    from diffusion.samplers.coefficients import check_coefficients, load_coefficients
    from diffusion.samplers.gits import load_timesteps, save_timesteps
    from diffusion.samplers.ipndm import check_coefficients as ipndm_check

    assert optimize_timesteps is fitting.optimize_timesteps and fit_coefficients is fitting.fit_coefficients
    assert load_coefficients is fitting.load_coefficients and check_coefficients is ipndm_check
    assert load_timesteps is fitting.load_timesteps and save_timesteps is fitting.save_timesteps
    assert fitted_schedule is fitting.fitted_schedule


def test_a_sampler_refuses_a_reference_in_one_line():
    x = torch.zeros(2, 2)
    with pytest.raises(ConfigError, match="a sampler takes the values themselves"):
        SamplerSpec("ipndm", steps=3, coefficients="weights.json")(processes.VPSDE(), lambda x, t: x, None, x_T=x)
