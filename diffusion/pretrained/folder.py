r"""diffusers model folders: read one into our U-Net, DDPM process and eps model, or write one from ours.

A diffusers DDPM folder (``DDPMPipeline.save_pretrained``, or ``google/ddpm-cifar10-32`` on the Hugging Face hub):

    model_index.json                         {"_class_name": "DDPMPipeline", "unet": [...], "scheduler": [...]}
    unet/config.json                         UNet2DModel's fields      (unet2d.py)
    unet/diffusion_pytorch_model.safetensors  its weights (or .bin, an older torch.save)
    scheduler/scheduler_config.json          DDPMScheduler's fields    (scheduler.py)

Everything is read as data: the JSON files as JSON, mapped field by field onto this project's own classes (no
class named in a file is imported), the weights through safetensors or ``torch.load(weights_only=True)``, which
refuses pickled objects. ``hf:<id>`` fetches a hub repository once into huggingface_hub's cache (only the files
above). Nothing here needs diffusers itself.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from diffusion.errors import CheckpointError
from diffusion.nn.unet import UNet
from diffusion.parameterization import EpsModel
from diffusion.pretrained.scheduler import process_from_scheduler, scheduler_from_process
from diffusion.pretrained.unet2d import state_dict_from_diffusers, state_dict_to_diffusers, unet2d_config, unet_options
from diffusion.processes.ddpm import DDPM
from diffusion.processes.base import Process
from diffusion.utils import write_atomic

HUB_PREFIX = "hf:"
WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
#: the files ``hf:<id>`` fetches: the configs and the unet's weights, nothing else of the repository
HUB_FILES = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
             "unet/diffusion_pytorch_model.bin", "scheduler/scheduler_config.json"]
UNET_TARGETS = ("diffusion.nn.UNet", "diffusion.nn.unet.UNet")
#: written into exported configs; diffusers reads any earlier version's files
DIFFUSERS_VERSION = "0.30.0"


def is_diffusers_source(ckpt: str | os.PathLike) -> bool:
    """Whether ``ckpt`` names a hub id (``hf:<id>``) or a folder in diffusers' layout (not a train.py run)."""
    if str(ckpt).startswith(HUB_PREFIX):
        return True
    p = Path(ckpt)
    return p.is_dir() and ((p / "model_index.json").is_file() or (p / "unet" / "config.json").is_file())


def fetch_hub(repo_id: str) -> Path:
    """The local folder of hub repository ``repo_id`` (downloaded once into huggingface_hub's cache; offline, the
    cached copy); ``CheckpointError`` naming the fix when it cannot be had."""
    fix = (f"download it where there is internet (hf download {repo_id} --local-dir <folder>) and "
           "pass ckpt=<folder>")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"ckpt=hf:{repo_id} needs huggingface_hub (pip install huggingface_hub), or {fix}") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, gated: all mean the same to the user
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot fetch hf:{repo_id} from the Hugging Face hub ({type(e).__name__}: {reason}); "
                              f"{fix}") from None


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: not a diffusers DDPM folder (it needs unet/config.json, unet/"
                              f"{WEIGHTS[0]} or .bin and scheduler/scheduler_config.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not readable JSON ({type(e).__name__}): the file is damaged") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not an object: the file is damaged")
    return data


def read_weights(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """(the weights file, its tensors) from safetensors, else a .bin through ``torch.load(weights_only=True)``."""
    for name in WEIGHTS:
        path = folder / name
        if not path.is_file():
            continue
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path), device="cpu")
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
            raise CheckpointError(f"{path}: refused, not plain tensors ({type(e).__name__}: {first}); weights are "
                                  "read as data only: use a .safetensors file or a trusted source") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path} is not a state dict of tensors: not UNet2DModel weights")
        return path, state
    raise CheckpointError(f"no {' or '.join(WEIGHTS)} in {folder}: the folder holds no UNet2DModel weights "
                          "(sharded or variant files are not read)")


def load_diffusers(ckpt: str | os.PathLike, device: str | torch.device = "cpu"
                   ) -> tuple[EpsModel, Process, DictConfig, Path]:
    """``(model, process, cfg, folder)`` of a diffusers DDPM folder or ``hf:<id>``: the eps model (eval mode, on
    ``device``), our DDPM process, a run config (model, process, prediction, data_shape; ``data`` unset: the
    folder does not say what it was trained on) and the folder. ``CheckpointError`` (one line) otherwise."""
    text = str(ckpt)
    folder = fetch_hub(text[len(HUB_PREFIX):]) if text.startswith(HUB_PREFIX) else Path(ckpt)
    index_path = folder / "model_index.json"
    if index_path.is_file():
        index = read_json(index_path)
        for part in ("unet", "scheduler"):
            if part not in index:
                raise CheckpointError(f"{index_path} has no {part!r}: only DDPM-family pipelines (a UNet2DModel "
                                      "and a DDPMScheduler) are read")
    unet_cfg = read_json(folder / "unet" / "config.json")
    sched_cfg = read_json(folder / "scheduler" / "scheduler_config.json")
    options = unet_options(unet_cfg, str(folder / "unet" / "config.json"))
    process_cfg, prediction = process_from_scheduler(sched_cfg, str(folder / "scheduler" / "scheduler_config.json"))
    if options["out_channels"] != options["in_channels"]:
        raise CheckpointError(f"{folder / 'unet' / 'config.json'}: out_channels={options['out_channels']} differs from "
                              f"in_channels={options['in_channels']}: networks with extra outputs are not imported")
    try:  # UNet's own checks: widths and norm groups, head width and attention widths, side and levels
        net = UNet(**options)
    except ValueError as e:
        raise CheckpointError(f"{folder / 'unet' / 'config.json'}: {e}") from None
    weights_path, state = read_weights(folder / "unet")
    net.load_state_dict(state_dict_from_diffusers(net, state, str(weights_path)))
    betas = process_cfg["betas"]
    process = DDPM(process_cfg["schedule"], process_cfg["num_steps"],
                   None if betas is None else torch.tensor(betas, dtype=torch.float64))
    model = EpsModel(net, process, prediction=prediction).to(device).eval()
    size = options["image_size"]
    cfg = OmegaConf.create({
        "model": {"_target_": UNET_TARGETS[0], **options}, "process": process_cfg, "prediction": prediction,
        "data": None, "data_shape": [options["in_channels"], size, size],
        "pretrained": {"format": "diffusers", "source": text, "folder": str(folder), "weights": str(weights_path),
                       "scheduler": sched_cfg},
    })
    return model, process, cfg, folder


def export_diffusers(model: torch.nn.Module, process: Process, model_cfg: DictConfig | dict,
                     out: str | os.PathLike, sample_size: int | None = None) -> Path:
    """Write ``model`` (an ``EpsModel`` around ``diffusion.nn.UNet``; ``model_cfg`` the config it was built from)
    as a diffusers DDPM folder that ``DDPMPipeline.from_pretrained(out)`` loads: the network as a UNet2DModel in
    safetensors, ``process`` as a DDPMScheduler; ``sample_size`` the side of the run's images (default the
    network's ``image_size``). ``CheckpointError`` (one line) when diffusers cannot hold it."""
    options = OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else dict(model_cfg)
    target = options.pop("_target_", None)
    net = getattr(model, "net", None)
    if not isinstance(model, EpsModel):
        raise CheckpointError(f"{process!r} with {type(model).__name__} is not exported: diffusers' DDPM pipeline "
                              "feeds the network x_t and the step index as they are, not EDM's scaled input and c_noise")
    if target not in UNET_TARGETS or not isinstance(net, UNet):
        raise CheckpointError(f"only diffusion.nn.UNet networks are exported; this run's model is {target or type(net).__name__}")
    unet_cfg = {"_diffusers_version": DIFFUSERS_VERSION, **unet2d_config(options, sample_size)}
    sched_cfg = {"_diffusers_version": DIFFUSERS_VERSION, **scheduler_from_process(process, model.prediction)}
    index = {"_class_name": "DDPMPipeline", "_diffusers_version": DIFFUSERS_VERSION,
             "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}
    from safetensors.torch import save

    weights = save(state_dict_to_diffusers(net), metadata={"format": "pt"})
    out = Path(out)
    for path, payload in ((out / "unet" / WEIGHTS[0], weights),
                          (out / "unet" / "config.json", _json_bytes(unet_cfg)),
                          (out / "scheduler" / "scheduler_config.json", _json_bytes(sched_cfg)),
                          (out / "model_index.json", _json_bytes(index))):
        write_atomic(path, lambda f, payload=payload: f.write(payload))
    return out


def _json_bytes(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


__all__ = ["HUB_PREFIX", "is_diffusers_source", "fetch_hub", "load_diffusers", "export_diffusers", "read_weights"]
