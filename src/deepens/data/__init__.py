"""Offline datasets, deterministic splits, device-resident batches, and a safe unpickler."""

from .datasets import DATASETS, Dataset, Split, load_dataset, load_ood
from .loader import Batches
from .ood import OOD_SETS, ood_inputs, photo_patches
from .unpickle import safe_load, safe_loads

__all__ = ["DATASETS", "Dataset", "Split", "load_dataset", "load_ood", "Batches", "safe_load", "safe_loads",
           "OOD_SETS", "ood_inputs", "photo_patches"]
