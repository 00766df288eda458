"""One source of trainer defaults: TrainerConfig (diffusion/config.py). configs/trainer/default.yaml sets nothing,
and every key another trainer option or recipe sets is a TrainerConfig field (so it overrides, never redefines)."""
from __future__ import annotations

import dataclasses

import pytest
import yaml
from omegaconf import OmegaConf

from diffusion.config import TrainerConfig

from .helpers import REPO, compose_train

FIELDS = {f.name for f in dataclasses.fields(TrainerConfig)}


def _keys(path) -> set[str]:
    data = yaml.safe_load(path.read_text()) or {}
    assert isinstance(data, dict), f"{path} is not a mapping"
    return set(data) - {"defaults"}


def test_default_option_sets_no_key():
    path = REPO / "configs" / "trainer" / "default.yaml"
    assert _keys(path) == set(), f"{path.name} sets {sorted(_keys(path))}: put the default into TrainerConfig instead"


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "trainer").glob("*.yaml")), ids=lambda p: p.name)
def test_every_trainer_option_key_is_a_field(path):
    assert _keys(path) <= FIELDS, f"{path.name} sets keys TrainerConfig lacks: {sorted(_keys(path) - FIELDS)}"


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "experiment").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_trainer_key_is_a_field(path):
    trainer = (yaml.safe_load(path.read_text()) or {}).get("trainer") or {}
    assert set(trainer) <= FIELDS, f"{path.name} sets trainer keys TrainerConfig lacks: {sorted(set(trainer) - FIELDS)}"


def test_the_default_run_is_the_dataclass():
    """train.yaml with trainer=default composes to exactly TrainerConfig()'s values."""
    composed = OmegaConf.to_container(compose_train().trainer)
    assert composed == OmegaConf.to_container(OmegaConf.structured(TrainerConfig()))
    assert (composed["max_steps"], composed["max_minutes"], composed["lr"], composed["ckpt_every"]) == (1200, 9, 1e-3, 250)
