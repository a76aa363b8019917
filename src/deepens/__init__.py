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

# Entry points of the higher layers, imported on first use (``deepens.run_sweep``, ``deepens.train``, ...),
# so that ``import deepens`` stays as light as the layers it needs.
_LAZY = {
    "train": "deepens.training",
    "TrainConfig": "deepens.training",
    "Trainer": "deepens.training",
    "StudyConfig": "deepens.study",
    "run_study": "deepens.study",
    "run_sweep": "deepens.sweeps",
    "load_spec": "deepens.sweeps",
    "SweepSpec": "deepens.sweeps",
    "Store": "deepens.sweeps",
    "Network": "deepens.kernels",
    "infinite_width_kernels": "deepens.kernels",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deepens' has no attribute {name!r}")

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
    "Network",
    "infinite_width_kernels",
    "train",
    "TrainConfig",
    "Trainer",
    "StudyConfig",
    "run_study",
    "run_sweep",
    "load_spec",
    "SweepSpec",
    "Store",
    "__version__",
]
