"""Offline datasets, deterministic splits, device-resident batches, and a safe unpickler."""

from .datasets import DATASETS, Dataset, Split, load_dataset
from .loader import Batches
from .unpickle import safe_load, safe_loads

__all__ = ["DATASETS", "Dataset", "Split", "load_dataset", "Batches", "safe_load", "safe_loads"]
