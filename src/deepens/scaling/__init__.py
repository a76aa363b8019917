"""Calibration, power laws and memory splits of ensembles (power-laws paper, Lobacheva et al. 2020)."""

from .calibration import calibrated_nll, cv_folds, lower_envelope_nll, nll_at_temperature, reference_cnll
from .dee import deep_ensemble_equivalent
from .memory import WidthFamily, budget_envelope, memory_split_table, predict_memory_split
from .pool import fit_pool_curve, pool_curve, pool_ensembles
from .powerlaw import PowerLaw, fit_power_law, predict_from_prefix

__all__ = [
    "calibrated_nll",
    "nll_at_temperature",
    "lower_envelope_nll",
    "reference_cnll",
    "cv_folds",
    "PowerLaw",
    "fit_power_law",
    "predict_from_prefix",
    "pool_ensembles",
    "pool_curve",
    "fit_pool_curve",
    "WidthFamily",
    "budget_envelope",
    "memory_split_table",
    "predict_memory_split",
    "deep_ensemble_equivalent",
]
