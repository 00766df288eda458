"""Published models: read diffusers' DDPM folders (``google/ddpm-cifar10-32`` and its siblings) into our U-Net and
DDPM process, and write our runs in that layout.

    model, process, cfg, folder = load_diffusers("hf:google/ddpm-cifar10-32")   # or a local folder
    export_diffusers(run.model, run.process, run.cfg.model, "exported/")         # DDPMPipeline.from_pretrained(...)

``diffusion.runs.load_run`` (and so ``ckpt=`` of sample.py and evaluate.py) accepts the same sources.
"""
from diffusion.pretrained.folder import HUB_PREFIX, export_diffusers, is_diffusers_source, load_diffusers
from diffusion.pretrained.scheduler import process_from_scheduler, scheduler_from_process
from diffusion.pretrained.unet2d import state_dict_from_diffusers, state_dict_to_diffusers, unet2d_config, unet_options

__all__ = ["HUB_PREFIX", "export_diffusers", "is_diffusers_source", "load_diffusers", "process_from_scheduler",
           "scheduler_from_process", "state_dict_from_diffusers", "state_dict_to_diffusers", "unet2d_config",
           "unet_options"]
