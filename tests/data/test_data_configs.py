"""configs/data/*.yaml build the data sets through hydra.utils.instantiate, as train.py does."""
from __future__ import annotations

import inspect
from pathlib import Path

import hydra.utils
import pytest
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

import diffusion.data
from diffusion.data import DataError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "data"
NAMES = ("mnist5k", "mnist", "cifar10", "folder", "npz")


@pytest.mark.parametrize("name", NAMES)
def test_config_holds_only_constructor_arguments(name):
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    target = cfg["_target_"]
    assert target.startswith("diffusion.data.")
    cls = getattr(diffusion.data, target.rsplit(".", 1)[1])
    parameters = inspect.signature(cls).parameters
    assert set(cfg) - {"_target_"} <= set(parameters), set(cfg) - set(parameters)
    assert cfg.split == "train"
    # No required constructor argument may be missing from the file (folder's root is there, as ???).
    required = {n for n, p in parameters.items() if p.default is inspect.Parameter.empty}
    assert required <= set(cfg)


def test_mnist5k_config_builds_the_default_data_set():
    data = hydra.utils.instantiate(OmegaConf.load(CONFIGS / "mnist5k.yaml"))
    assert isinstance(data, diffusion.data.MNIST5k) and len(data) == 4500


def test_test_split_override():
    cfg = OmegaConf.load(CONFIGS / "mnist5k.yaml")
    data = hydra.utils.instantiate(cfg, split="test", as_uint8=True)
    assert len(data) == 500 and data.as_uint8


def test_folder_config_requires_a_root(tmp_path):
    cfg = OmegaConf.load(CONFIGS / "folder.yaml")
    with pytest.raises(MissingMandatoryValue):
        hydra.utils.instantiate(cfg)
    from PIL import Image

    Image.new("RGB", (70, 90)).save(tmp_path / "a.png")
    cfg.root = str(tmp_path)
    data = hydra.utils.instantiate(cfg)
    assert data[0][0].shape == (3, 64, 64)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_download_configs_fail_with_the_fix_when_files_are_missing(tmp_path, name):
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    assert cfg.download is False and cfg.root == f"data/{name}"
    cfg.root = str(tmp_path / name)
    # instantiate wraps constructor errors in its own InstantiationException; the DataError is its cause.
    with pytest.raises(Exception) as info:
        hydra.utils.instantiate(cfg)
    error = info.value if isinstance(info.value, DataError) else info.value.__cause__
    assert isinstance(error, DataError) and f"data={name} data.download=true" in str(error)
