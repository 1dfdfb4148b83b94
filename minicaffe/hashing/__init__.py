"""Hashing evaluation and the unsupervised hashing baselines of DAH (``dah_spec.md`` §4).

Metrics (:mod:`.metrics`): :func:`binarize`, :func:`hamming_distance`,
:func:`mean_average_precision` (full Hamming ranking, protocols A and B),
:func:`precision_recall_by_radius`, :func:`pr_to_csv`, :func:`recognition_accuracy`
(supplement eq. 6).

Baselines, each ``fit(features, n_bits, seed=0, ...)`` returning a model with
``encode(features) -> {-1, +1} codes`` and ``history`` (objective per iteration):
:class:`ITQ`, :class:`KMH` (K-means hashing), :class:`BinaryAutoencoder` (BA),
:class:`BDNN` (UH-BDNN). ``BASELINES`` maps the tables' column names to the fit functions.
"""
from .ba import BinaryAutoencoder, fit_ba
from .bdnn import BDNN, fit_bdnn
from .itq import ITQ, fit_itq, pca
from .kmh import KMH, fit_kmh
from .metrics import (
                      average_precisions,
                      binarize,
                      class_log_probabilities,
                      hamming_distance,
                      mean_average_precision,
                      pr_to_csv,
                      precision_recall_by_radius,
                      recognition_accuracy,
)

BASELINES = {"ITQ": fit_itq, "KMeans": fit_kmh, "BA": fit_ba, "BDNN": fit_bdnn}

__all__ = ["binarize", "hamming_distance", "average_precisions", "mean_average_precision",
           "precision_recall_by_radius", "pr_to_csv", "class_log_probabilities",
           "recognition_accuracy", "pca", "ITQ", "KMH", "BinaryAutoencoder", "BDNN",
           "fit_itq", "fit_kmh", "fit_ba", "fit_bdnn", "BASELINES"]
