"""Ensembles computed in one vectorized call (member axis first)."""

from .base import Ensemble
from .batch import BatchEnsemble, MCDropout
from .collegial import CollegialMLP, ResNeXt29, ResNeXtBottleneck
from .deep import DeepEnsemble
from .lld import LastLayerDropout
from .vectorize import VectorizedEnsemble, vectorize

__all__ = [
    "Ensemble",
    "DeepEnsemble",
    "BatchEnsemble",
    "MCDropout",
    "LastLayerDropout",
    "VectorizedEnsemble",
    "vectorize",
    "CollegialMLP",
    "ResNeXtBottleneck",
    "ResNeXt29",
]
