"""Evaluation: likelihood tables, sampler sweeps and sample-quality scores (generating and storing samples is
``diffusion.runs``).

    table = likelihood_table(process, model, test_images_uint8, divergence="hutchinson", probes=4)
    report = DigitMetric()(images)          # offline MNIST quality: digit FD/KID vs the test split, floors, copies
    rows = run_sweep(process, model, (1, 28, 28), {"ddim": {}, "dpmpp_2m": {}}, [5, 10, 20], n=1000, quality=...)

sample.py and evaluate.py are thin command lines over these.
"""
from diffusion.evaluation.digit_features import DigitFeatures, load_digit_features
from diffusion.evaluation.digit_metric import DigitMetric
from diffusion.evaluation.frechet import frechet_distance, frechet_distance_to, gaussian_stats
from diffusion.evaluation.kid import kid
from diffusion.evaluation.likelihood_table import LikelihoodTable, likelihood_table
from diffusion.evaluation.quality import Quality, build_quality
from diffusion.evaluation.sweep import markdown_table, plot_sweep, run_sweep, save_sweep

__all__ = ["DigitFeatures", "load_digit_features", "DigitMetric", "kid", "frechet_distance", "frechet_distance_to",
           "gaussian_stats", "LikelihoodTable", "likelihood_table", "Quality", "build_quality", "markdown_table",
           "plot_sweep", "run_sweep", "save_sweep"]
