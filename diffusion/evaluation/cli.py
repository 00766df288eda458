"""What sample.py and evaluate.py share: the checkpoint's model and data, the device, and one-line errors.

Model and process are rebuilt from the checkpoint's saved training config (``training.build.load_model``); the
user never repeats them. Every problem a user can fix ends the program with one line on stderr and exit code 2.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from diffusion.device import pick_device  # noqa: F401 - the scripts' device, as training's

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class EvaluationError(ValueError):
    """A sampling or evaluation request cannot be carried out; the message is one line that names the fix."""


def run_dir_of(ckpt: str | os.PathLike) -> Path:
    """The train.py run folder of a checkpoint file (``<run>/checkpoints/ckpt_<step>.pt``) or run folder."""
    p = Path(ckpt)
    if p.is_dir():
        return p.parent if p.name == "checkpoints" and not (p / "checkpoints").is_dir() else p
    return p.parent.parent if p.parent.name == "checkpoints" else p.parent


def load_trained(ckpt: str, ema: bool, device: torch.device):
    """(model, process, cfg, checkpoint path) of a checkpoint file or run folder; CheckpointError on a bad file."""
    from diffusion.training.build import load_model
    from diffusion.training.checkpoint import resolve_checkpoint

    path = resolve_checkpoint(ckpt)
    model, process, cfg = load_model(path, use_ema=ema, device=device)
    return model, process, cfg, path


def num_classes_of(model, cfg: DictConfig) -> int | None:
    """K for a class-conditional model (labels 0..K-1; K itself is the null class), None otherwise."""
    for owner in (model, getattr(model, "net", None)):
        k = getattr(owner, "num_classes", None)
        if isinstance(k, int):
            return k
    k = OmegaConf.select(cfg, "model.num_classes")
    return int(k) if k is not None else None


def data_target(cfg: DictConfig) -> str | None:
    return OmegaConf.select(cfg, "data._target_")


def build_data(data_cfg: DictConfig, split: str):
    """The data set of a config with raw uint8 images and no augmentation."""
    from hydra.utils import instantiate

    kwargs: dict[str, Any] = {"split": split, "as_uint8": True}
    if "flip" in data_cfg:
        kwargs["flip"] = False
    return instantiate(data_cfg, **kwargs)


def sample_shape(cfg: DictConfig) -> tuple[tuple[int, int, int], str | None]:
    """Per-sample shape (C, H, W) of the run's data; from the data set itself (a train.py network runs at any
    size the data has), else from the model config when the data set cannot be opened here (with a note)."""
    from diffusion.data import DataError

    shape = OmegaConf.select(cfg, "data_shape")
    if shape is not None:
        return tuple(int(s) for s in shape), None
    try:
        data = build_data(cfg.data, "test")
        return (int(data.channels), int(data.image_size), int(data.image_size)), None
    except (DataError, Exception) as e:  # noqa: BLE001 - any failure: fall back on the network's own size
        c, s = OmegaConf.select(cfg, "model.in_channels"), OmegaConf.select(cfg, "model.image_size")
        if c is None or s is None:
            raise EvaluationError(f"cannot tell the image shape: the run's data set does not open here ({_first(e)}) "
                                  "and its model config has no in_channels/image_size") from None
        return (int(c), int(s), int(s)), f"data set unavailable here ({_first(e)}); using the model's {c}x{s}x{s}"


def sampler_defaults(name: str) -> dict[str, Any]:
    """configs/sampler/<name>.yaml as a dict (empty if the file does not exist)."""
    path = CONFIG_DIR / "sampler" / f"{name}.yaml"
    if not path.is_file():
        return {}
    return dict(OmegaConf.to_container(OmegaConf.load(path), resolve=True))


def _first(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def one_line(error: BaseException) -> str:
    """An exception (Hydra's multi-line ones included) as one line."""
    from hydra.errors import MissingConfigException

    parts = [str(error) or type(error).__name__]
    if isinstance(error, MissingConfigException) and error.options:
        options = [o for o in error.options if not o.endswith("_schema")]
        parts = [str(error).split("\n")[0], f"available: {', '.join(options)}"]
    elif error.__cause__ is not None and str(error.__cause__) not in parts[0]:
        parts.append(str(error.__cause__))
    lines = [line.strip() for part in parts for line in part.splitlines() if line.strip()]
    return "; ".join(dict.fromkeys(lines))


def user_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from diffusion.data import DataError
    from diffusion.training.checkpoint import CheckpointError

    return HydraException, OmegaConfBaseException, DataError, CheckpointError, EvaluationError, ValueError


_failures: list[BaseException] = []
_full_error = [False]


def guarded(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a script's task inside its @hydra.main function, keeping a user error for ``run_main`` to print as one
    line (raised through Hydra, it would first print its own "Error executing job ..." line)."""
    try:
        return task(cfg)
    except user_errors() as error:
        if _full_error[0]:
            raise
        _failures.append(error)
        return None


def run_main(prog: str, hydra_main: Callable[[], Any]) -> int:
    """Run a @hydra.main function (whose task goes through ``guarded``); print a user error, from the task or
    from composing the config, as ``<prog>: error: <one line>`` on stderr and return 2.
    HYDRA_FULL_ERROR=1 shows the full traceback instead."""
    from diffusion.evaluation import config

    _full_error[0] = os.environ.get("HYDRA_FULL_ERROR") == "1"
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises composition errors; we print the one line ourselves
    config.register()
    _failures.clear()
    try:
        hydra_main()
        if _failures:
            raise _failures.pop()
    except user_errors() as error:
        if _full_error[0]:
            raise
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (finished batches are kept; rerun the same command to resume)", file=sys.stderr)
        return 130
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
    return 0
