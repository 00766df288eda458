"""``sample``: the registry, option checking, errors, classifier-free guidance, NFE counting and the configs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from diffusion import processes
from diffusion.samplers import SAMPLERS, CountingModel, runs_on, sample, sampler_options

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "sampler"


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and len(message) < 300, message
    return message


def test_unknown_sampler_lists_the_samplers():
    with pytest.raises(ValueError) as excinfo:
        sample(processes.VPSDE(), lambda x, t: x, (2, 2), sampler="lms")
    message = _one_line_error(excinfo)
    assert "'lms'" in message and all(name in message for name in SAMPLERS)


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError) as excinfo:
        sample(processes.VPSDE(), lambda x, t: x, (2, 2), sampler="ddim", etaa=0.5)
    message = _one_line_error(excinfo)
    assert "etaa" in message and "eta" in message.split("valid options:")[1] and "spacing" in message


def test_ddpm_on_an_sde_names_the_alternative():
    with pytest.raises(ValueError) as excinfo:
        sample(processes.VPSDE(), lambda x, t: x, (2, 2), sampler="ddpm", steps=10)
    message = _one_line_error(excinfo)
    assert "ddim" in message and "eta=1" in message and "euler_maruyama" in message


@pytest.mark.parametrize("sampler,options,words", [
    ("ddim", {"eta": 1.5}, ["eta", "[0, 1]"]),
    ("ddim", {"spacing": "cubic"}, ["cubic", "logsnr"]),
    ("ddpm", {"variance": "large"}, ["large", "beta_tilde"]),
    ("pc", {"predictor": "heun"}, ["heun", "reverse_diffusion"]),
    ("ode", {"method": "rk45"}, ["rk45", "dopri5"]),
    ("euler_maruyama", {"noise_scale": -1.0}, ["noise_scale", ">= 0"]),
])
def test_bad_option_values_are_one_line(sampler, options, words):
    process = processes.DDPM("linear", 100) if sampler == "ddpm" else processes.VPSDE()
    with pytest.raises(ValueError) as excinfo:
        sample(process, lambda x, t: x, (2, 2), sampler=sampler, steps=10, **options)
    message = _one_line_error(excinfo)
    assert all(w in message for w in words), message


def test_too_many_ddpm_steps():
    with pytest.raises(ValueError) as excinfo:
        sample(processes.DDPM("linear", 100), lambda x, t: x, (2, 2), sampler="ddpm", steps=200)
    assert "steps <= 100" in _one_line_error(excinfo)


def test_guidance_without_labels():
    with pytest.raises(ValueError) as excinfo:
        sample(processes.VPSDE(), lambda x, t: x, (2, 2), guidance_scale=2.0)
    assert "class_labels" in _one_line_error(excinfo)


def test_x_T_is_drawn_from_the_prior_with_the_generator():
    process = processes.VESDE()
    identity = CountingModel(lambda x, t: torch.zeros_like(x))  # eps = 0: every sampler returns x_T unchanged
    x = sample(process, identity, (3, 5), "ddim", steps=4, generator=torch.Generator().manual_seed(7))
    expected = process.prior_sample((3, 5), torch.Generator().manual_seed(7))
    assert torch.equal(x, expected) and x.dtype == torch.float32 and identity.nfe == 4
    x64 = sample(process, identity, None, "ddim", steps=4, x_T=expected.double())
    assert x64.dtype == torch.float64  # a given x_T keeps its dtype


def test_runs_without_grad():
    weight = torch.nn.Parameter(torch.tensor(0.5))
    x = sample(processes.VPSDE(), lambda x, t: weight * x, (4, 2), "dpmpp_2m", steps=5,
               generator=torch.Generator().manual_seed(0))
    assert not x.requires_grad


def test_progress_bar(capsys):
    sample(processes.VPSDE(), lambda x, t: x, (2, 2), "ddim", steps=3, progress=True)
    assert "ddim" in capsys.readouterr().err


# ---- classifier-free guidance -----------------------------------------------------------------------------


class _LabelModel:
    """eps = (label + 1) * x, so the guided eps is known in closed form; the null label is num_classes = 3."""

    num_classes = 3

    def __call__(self, x, t, class_labels):
        return (class_labels.to(x.dtype) + 1)[:, None] * x


@pytest.mark.parametrize("w", [0.0, 1.0, 3.0])
def test_classifier_free_guidance(w):
    """One DDIM step (steps=1) returns x0_pred = (x - sigma eps)/alpha at t_max, with the guided eps
    eps_u + w (eps_c - eps_u) = (4 + w (label - 3)) x; both branches cost one batched call."""
    process = processes.VPSDE()
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0])
    model = CountingModel(_LabelModel())
    out = sample(process, model, None, "ddim", steps=1, x_T=x_T, class_labels=labels, guidance_scale=w)
    t = torch.tensor([process.t_max], dtype=torch.float64)
    eps = (4 + w * (labels.double() - 3))[:, None] * x_T
    # rtol 1e-9: where eps = x, x - sigma eps cancels to 1 - sigma(t_max) = 3e-5, costing 4-5 of float64's 16 digits
    assert torch.allclose(out, (x_T - process.sigma(t) * eps) / process.alpha(t), rtol=1e-9, atol=0)
    assert model.nfe == 1


def test_conditional_without_guidance_passes_the_labels():
    process = processes.VPSDE()
    x_T = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2])
    out = sample(process, _LabelModel(), None, "ddim", steps=1, x_T=x_T, class_labels=labels)
    guided = sample(process, _LabelModel(), None, "ddim", steps=1, x_T=x_T, class_labels=labels, guidance_scale=1.0)
    assert torch.allclose(out, guided, rtol=1e-9, atol=0)  # same cancellation as above


def test_null_class_needs_a_source():
    def model(x, t, class_labels):
        return x

    with pytest.raises(ValueError) as excinfo:
        sample(processes.VPSDE(), model, (2, 2), class_labels=torch.tensor([0, 1]), guidance_scale=2.0)
    assert "null_class" in _one_line_error(excinfo)
    out = sample(processes.VPSDE(), model, (2, 2), class_labels=torch.tensor([0, 1]), guidance_scale=2.0, null_class=10)
    assert out.shape == (2, 2)


# ---- registry and configs ---------------------------------------------------------------------------------


def _composed(option: str) -> dict:
    """configs/sampler/<option>.yaml as sample.py composes it (its schema supplies the sampler's defaults)."""
    from hydra import compose, initialize_config_dir

    from diffusion.evaluation import config

    config.register()  # sample.py's schema and the generated sampler schemas
    with initialize_config_dir(config_dir=str(CONFIGS.parent), version_base="1.3"):
        cfg = compose("sample", overrides=[f"sampler={option}", "ckpt=x"])
    return OmegaConf.to_container(cfg.sampler)


def test_every_sampler_has_a_config_with_its_defaults():
    assert set(SAMPLERS) <= {p.stem for p in CONFIGS.glob("*.yaml")}
    for name in SAMPLERS:
        cfg = _composed(name)
        assert cfg.pop("_target_") == "diffusion.samplers.SamplerSpec"
        assert cfg.pop("name") == name and isinstance(cfg.pop("steps"), int)
        assert cfg == sampler_options(name), name  # every option, with the function's own default


def test_sampler_configs_repeat_no_default():
    """Each default lives in one place: a sampler YAML sets only what differs from the function's signature."""
    from diffusion.samplers import SamplerSpec

    default_steps = SamplerSpec("ddim").steps
    for path in CONFIGS.glob("*.yaml"):
        raw = OmegaConf.to_container(OmegaConf.load(path))
        raw.pop("defaults")
        name = _composed(path.stem)["name"]
        defaults = {"steps": default_steps, **sampler_options(name)}
        assert set(raw) <= set(defaults), path.name
        assert all(raw[k] != defaults[k] for k in raw), (path.name, raw)


def test_preset_configs_name_a_sampler_and_only_its_options():
    """Other files in configs/sampler/ are presets of a registered sampler (e.g. ddim_stochastic)."""
    for path in CONFIGS.glob("*.yaml"):
        cfg = _composed(path.stem)
        cfg.pop("_target_")
        name = cfg.pop("name")
        assert name in SAMPLERS and isinstance(cfg.pop("steps"), int), path.name
        assert set(cfg) <= set(sampler_options(name)), path.name


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_config_runs_on_every_supported_process(name):
    cfg = _composed(name)
    cfg.pop("_target_"), cfg.pop("name"), cfg.pop("steps")
    for process in [processes.DDPM("linear", 100), processes.VPSDE(), processes.SubVPSDE(), processes.VESDE(),
                    processes.EDM(), processes.RectifiedFlow()]:
        if not runs_on(name, process):
            continue
        model = CountingModel(lambda x, t: 0.1 * x)
        x = sample(process, model, (2, 3), sampler=name, steps=5, generator=torch.Generator().manual_seed(0), **cfg)
        assert x.shape == (2, 3) and torch.isfinite(x).all()
        expected = {"pc": 5 * (1 + cfg.get("corrector_steps", 0)), "ode": None, "heun": 2 * 5 - 1}.get(name, 5)
        assert expected is None or model.nfe == expected, (name, process, model.nfe)


def test_spec_label_names_the_walk_that_runs():
    """sample.py's folder and the sweep's grids are named by the label: explicit timesteps replace steps there."""
    from diffusion.samplers import SamplerSpec

    assert SamplerSpec("ddim", steps=50).label == "ddim_50"
    assert SamplerSpec("unipc", steps=20, timesteps="runs/x/eval/schedules/unipc_6.json").label == "unipc_unipc_6"
    assert SamplerSpec("ipndm", timesteps=[0.999, 0.5, 0.1, 0.002]).label == "ipndm_3_grid"


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_spec_check_passes_every_config_on_every_process_it_runs_on(name):
    """``check`` runs the sampler up to its first model call: every shipped config must get through on every process
    it supports, without touching the global RNG (heun with churn draws noise before its first call)."""
    from diffusion.samplers import sampler_from_config

    spec = sampler_from_config({**_composed(name), "steps": 5})
    for process in [processes.DDPM("linear", 100), processes.VPSDE(), processes.SubVPSDE(), processes.VESDE(),
                    processes.EDM(), processes.RectifiedFlow()]:
        if runs_on(spec.name, process):
            state = torch.get_rng_state()
            assert spec.check(process) is spec
            assert torch.equal(torch.get_rng_state(), state), (name, process)


@pytest.mark.parametrize("name,options,message", [
    ("unipc", {"order": 7}, "order must be 1, 2 or 3, got 7"),
    ("unipc", {"variant": "bh3"}, "unknown variant 'bh3'"),
    ("ipndm", {"order": 0}, "order must be 1, 2, 3 or 4, got 0"),
    ("ddim", {"eta": 2.0}, "eta must be in [0, 1], got 2.0"),
    ("ode", {"method": "rk99"}, "unknown ODE method 'rk99'"),
    ("dpmpp_2m", {"spacing": "cubic"}, "cubic"),
    ("ipndm", {"timesteps": [2.0, 0.5, 0.1]}, "timesteps must lie in"),
    ("heun", {"S_churn": -1.0}, "need S_churn >= 0"),
    ("ipndm", {"timesteps": [0.9, 0.5, 0.1, 0.01], "coefficients": [[1.0], [1.0]]}, "has 2 rows for 3 steps"),
])
def test_spec_check_catches_bad_option_values_before_any_model_call(name, options, message):
    from diffusion.errors import ConfigError
    from diffusion.samplers import SamplerSpec

    spec = SamplerSpec(name, steps=5, **options)  # names are checked here, values by check()
    with pytest.raises(ConfigError, match=re.escape(message)):
        spec.check(processes.VPSDE())


def test_spec_check_leaves_fitted_options_to_the_fit():
    """``timesteps=fitted`` is resolved by ``diffusion.fitting`` after the check; check() validates the rest around
    it."""
    from diffusion.errors import ConfigError
    from diffusion.fitting import resolve_sampler
    from diffusion.samplers import SamplerSpec

    SamplerSpec("ipndm", steps=5, timesteps="fitted", coefficients="fitted").check(processes.VPSDE())
    with pytest.raises(ConfigError, match="order must be"):
        SamplerSpec("ipndm", steps=5, timesteps="fitted", order=9).check(processes.VPSDE())
    # callers that sample as configured (the training grids, inpainting) refuse it at once, with the usual line
    with pytest.raises(ConfigError, match="timesteps=fitted .* is resolved by sample.py"):
        resolve_sampler(SamplerSpec("ipndm", steps=5, timesteps="fitted"), processes.VPSDE(), fit=False)
    with pytest.raises(ConfigError, match="coefficients=fitted .* is resolved by sample.py"):
        resolve_sampler(SamplerSpec("ipndm", steps=5, coefficients="fitted"), processes.VPSDE(), fit=False)
    # and a reference that reaches a sampler unresolved is one line naming the fix
    with pytest.raises(ConfigError, match="resolve it first with diffusion.fitting.resolve_sampler"):
        SamplerSpec("ipndm", steps=5, timesteps="fitted")(processes.VPSDE(), lambda x, t: x, (2, 2))
