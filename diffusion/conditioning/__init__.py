"""Controllable generation with any sampler: inpainting (replacement, RePaint) and ODE-latent interpolation.

    x = inpaint(process, model, x_known, mask, sampler="ddim", steps=50, method="replacement", generator=g)
    path = interpolate(process, model, image_a, image_b, frames=8)
"""
from diffusion.conditioning.inpaint import METHODS, Replacement, check_mask, inpaint
from diffusion.conditioning.interpolate import interpolate, slerp

__all__ = ["inpaint", "interpolate", "slerp", "check_mask", "Replacement", "METHODS"]
