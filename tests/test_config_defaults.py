"""Each default lives in one place (#16): the process and loss YAML files extend schemas generated from the
constructors' signatures and set only what differs from them (samplers: tests/samplers/test_api.py; trainer:
tests/training/test_trainer_defaults.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from omegaconf import MISSING, OmegaConf

from diffusion.config import generated_schemas

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("group", ["process", "loss"])
def test_yaml_sets_only_what_differs_from_the_signature(group):
    schemas = generated_schemas()
    for path in sorted((CONFIGS / group).glob("*.yaml")):
        if path.name == "auto.yaml":  # loss=auto: a marker that training resolves (tests/training/test_configs.py)
            continue
        raw = OmegaConf.to_container(OmegaConf.load(path))
        (extends,) = [d for d in raw.pop("defaults") if isinstance(d, str) and d.startswith(f"/schema/{group}/")]
        schema = schemas[(f"schema/{group}", extends.split("/")[-1].split("@")[0])]
        defaults = {f.name: f.default for f in dataclasses.fields(schema)}
        assert set(raw) <= set(defaults), (path.name, set(raw) - set(defaults))
        repeated = {k: v for k, v in raw.items() if defaults[k] is not MISSING and v == defaults[k]}
        assert not repeated, (path.name, repeated)


def test_a_schema_has_the_signature_defaults():
    from diffusion.processes import DDPM

    fields = {f.name: f.default for f in dataclasses.fields(generated_schemas()[("schema/process", "ddpm")])}
    assert fields == {"_target_": "diffusion.processes.DDPM", "schedule": "linear", "num_steps": 1000, "betas": None}
    assert DDPM().num_steps == fields["num_steps"]
