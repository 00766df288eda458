"""A trained run and what is done with it: load it (checkpoint -> model, process, config), generate samples from
it in seeded batches, and store them (NPZ, PNG grids, resumable batch folders). Shared by train.py's sample grids,
sample.py and evaluate.py.

    run = load_run("runs/<run>")
    images, labels, stats = generate(run.process, run.model, 1000, (1, 28, 28), sampler=SamplerSpec("ddim", 50))
"""
from diffusion.runs.generate import GenerationStats, batch_generator, check_request, class_labels_for, generate
from diffusion.runs.load import (TrainedRun, build_data, config_from_checkpoint, load_model, load_run, num_classes_of,
                                 run_dir_of, sample_shape, saved_config)
from diffusion.runs.store import BatchStore, load_images, save_grid, save_npz, save_uint8_grid, to_uint8

__all__ = ["GenerationStats", "batch_generator", "check_request", "class_labels_for", "generate", "TrainedRun", "build_data",
           "config_from_checkpoint", "load_model", "load_run", "num_classes_of", "run_dir_of", "sample_shape", "saved_config",
           "BatchStore", "load_images", "save_grid", "save_npz", "save_uint8_grid", "to_uint8"]
