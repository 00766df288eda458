"""Evaluation: many samples on disk, likelihood tables, sampler sweeps and sample-quality scores.

    images, labels, stats = generate(process, model, 1000, (1, 28, 28), sampler="ddim", steps=50, seed=0)
    table = likelihood_table(process, model, test_images_uint8, divergence="hutchinson", probes=4)
    report = DigitMetric()(images)          # offline MNIST quality: digit FD/KID vs the test split, floors, copies
    rows = run_sweep(process, model, (1, 28, 28), {"ddim": {}, "dpmpp_2m": {}}, [5, 10, 20], n=1000, quality=...)

sample.py and evaluate.py are thin command lines over these.
"""
from diffusion.evaluation.digit_features import DigitFeatures, load_digit_features
from diffusion.evaluation.digit_metric import DigitMetric
from diffusion.evaluation.frechet import frechet_distance, frechet_distance_to, gaussian_stats
from diffusion.evaluation.generate import GenerationStats, batch_generator, generate
from diffusion.evaluation.kid import kid
from diffusion.evaluation.io import BatchStore, load_images, save_grid, save_npz, to_uint8
from diffusion.evaluation.likelihood_table import LikelihoodTable, likelihood_table
from diffusion.evaluation.quality import Quality, build_quality
from diffusion.evaluation.sweep import markdown_table, plot_sweep, run_sweep, save_sweep

__all__ = ["DigitFeatures", "load_digit_features", "DigitMetric", "kid", "frechet_distance", "frechet_distance_to", "gaussian_stats",
           "GenerationStats", "batch_generator", "generate", "BatchStore", "load_images", "save_grid", "save_npz",
           "to_uint8", "LikelihoodTable", "likelihood_table", "Quality", "build_quality", "markdown_table",
           "plot_sweep", "run_sweep", "save_sweep"]
