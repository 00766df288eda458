"""Training a model to take big steps from a trained teacher: consistency distillation (any process) and reflow
(rectified flow). ``train.py distill=consistency|reflow distill.teacher=<run>`` runs them (``setup.py``)."""
from diffusion.consistency import ConsistencyModel
from diffusion.distillation.consistency import ConsistencyDistillation, consistency_grid, teacher_step
from diffusion.distillation.reflow import CouplingDataset, draw_couplings

__all__ = ["ConsistencyDistillation", "ConsistencyModel", "consistency_grid", "teacher_step", "CouplingDataset",
           "draw_couplings"]
