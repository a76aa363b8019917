"""deepens — deep ensembles that are cheap to train and run, predicted by infinite-width theory.

The public API is re-exported here; see the README for the concepts and one example per capability.
Shape convention: the member axis comes first, (M, B, ...).
"""

from .errors import DeepensError

__version__ = "0.1.0"

# The public API, imported on first use (``deepens.MLP``, ``deepens.train``, ...): ``import deepens`` (and the
# ``deepens`` command's start-up) does not pay for torch until something needs it.
_LAZY = {
    **dict.fromkeys(("BatchEnsemble", "CollegialMLP", "DeepEnsemble", "Ensemble", "LastLayerDropout", "MCDropout",
                     "ResNeXt29", "ResNeXtBottleneck", "VectorizedEnsemble", "vectorize"), "deepens.ensembles"),
    **dict.fromkeys(("Bernoulli", "Constant", "Distribution", "Normal", "ShiftedNormal", "Sign", "Ternary",
                     "parse_distribution"), "deepens.layers"),
    **dict.fromkeys(("MLP", "ConvNet"), "deepens.models"),
    **dict.fromkeys(("train", "TrainConfig", "Trainer"), "deepens.training"),
    **dict.fromkeys(("StudyConfig", "run_study"), "deepens.study"),
    **dict.fromkeys(("run_sweep", "load_spec", "SweepSpec", "Store"), "deepens.sweeps"),
    **dict.fromkeys(("Network", "infinite_width_kernels"), "deepens.kernels"),
}
_SUBPACKAGES = ("data", "design", "ensembles", "io", "kernels", "layers", "models", "runs", "scaling", "study",
                "sweeps", "symmetry", "training", "errors", "cli")


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"deepens.{name}")
    raise AttributeError(f"module 'deepens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))


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
