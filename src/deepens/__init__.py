"""deepens — deep ensembles that are cheap to train and run, predicted by infinite-width theory.

The public API is re-exported here; see the README for the concepts and one example per capability.
Shape convention: the member axis comes first, (M, B, ...).
"""

from .ensembles import (
    BatchEnsemble,
    CollegialMLP,
    DeepEnsemble,
    Ensemble,
    LastLayerDropout,
    MCDropout,
    ResNeXt29,
    ResNeXtBottleneck,
    VectorizedEnsemble,
    vectorize,
)
from .errors import DeepensError
from .layers import (
    Bernoulli,
    Constant,
    Distribution,
    Normal,
    ShiftedNormal,
    Sign,
    Ternary,
    parse_distribution,
)
from .models import MLP, ConvNet

__version__ = "0.1.0"

__all__ = [
    "DeepensError",
    "MLP",
    "ConvNet",
    "Distribution",
    "Normal",
    "ShiftedNormal",
    "Bernoulli",
    "Ternary",
    "Sign",
    "Constant",
    "parse_distribution",
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
    "__version__",
]
