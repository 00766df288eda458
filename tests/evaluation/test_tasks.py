"""What diffusion/evaluation/tasks.py takes from its schema and the quality module, without a trained run."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from diffusion.errors import ConfigError, EvaluationError
from diffusion.evaluation.config import EvaluateConfig, Task, count
from diffusion.evaluation.quality import digit_reference
from diffusion.evaluation.tasks import switch

ROOT = Path(__file__).resolve().parents[2]


def _cfg(**values):
    cfg = OmegaConf.structured(EvaluateConfig)
    for key, value in values.items():
        OmegaConf.update(cfg, key, value)
    return cfg


@pytest.mark.parametrize("task,n,expected", [("likelihood", None, 32), ("sweep", None, 256), ("schedule", None, 256),
                                             ("likelihood", 5, 5), ("sweep", 1, 1), ("schedule", 7, 7)])
def test_count_defaults_and_given(task, n, expected):
    assert count(_cfg(task=Task(task), n=n)) == expected


@pytest.mark.parametrize("values,message", [
    (dict(task=Task.likelihood, n=-1), "n=-1 must be a positive number of test images"),
    (dict(task=Task.sweep, n=0), "n=0 must be a positive number of samples per row"),
    ({"task": Task.schedule, "schedule.n": -4}, "n=-4 must be a positive number of fitting draws"),
])
def test_count_refuses_non_positive(values, message):
    with pytest.raises(EvaluationError, match=message):
        count(_cfg(**values))


def test_likelihood_dtype_and_variances_are_typed_by_the_schema():
    cfg = _cfg()
    for key, value in (("likelihood.dtype", "float16"), ("likelihood.variances", ["beta_tilde", "nope"])):
        with pytest.raises(Exception, match="Invalid value"):
            OmegaConf.update(cfg, key, value)


def test_switch():
    assert [switch("k", v) for v in ("auto", "true", "1", "off", False)] == ["auto", True, True, False, False]
    with pytest.raises(ConfigError, match="k='maybe': expected auto, true or false"):
        switch("k", "maybe")


def test_digit_reference_is_the_shipped_mnist5k_config():
    """task=fid's default reference of 28x28 digits equals configs/data/mnist5k.yaml (built from the class)."""
    shipped = OmegaConf.load(ROOT / "configs" / "data" / "mnist5k.yaml")
    assert OmegaConf.to_container(digit_reference()) == OmegaConf.to_container(shipped)
