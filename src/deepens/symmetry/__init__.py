"""Symmetry: groups, their actions on inputs and outputs, augmentation, orbit metrics, and the
infinite-width statement that augmented deep ensembles are equivariant (Gerken & Kessel, ICML 2024).

The experiments (Ising, cross product, rotated digits, SO(2)) are parts of the study
(:mod:`deepens.study.equivariance`).
"""

from .actions import (
    Action,
    ImageRotation,
    LatticeRotation,
    PermutationAction,
    Symmetry,
    Trivial,
    VectorRotation,
    border_value,
    pad_for_rotation,
)
from .augment import RandomAugmentation, augment_orbits, draw_elements, image_augmentation, orbit_permutation
from .groups import (
    ROTATION_GROUPS,
    SO2,
    SO3,
    CyclicGroup,
    FiniteGroup,
    Group,
    MatrixGroup,
    PermutationGroup,
    axis_rotations,
    cyclic_shifts,
    icosahedral,
    octahedral,
    rotation_matrix,
    symmetric,
    tetrahedral,
)
from .metrics import (
    ensemble_orbit_metrics,
    equivariance_error,
    orbit_outputs,
    orbit_same_predictions,
    relative_orbit_std,
    summarize,
)
from .theory import InfiniteWidthEnsemble

__all__ = [
    "Group", "FiniteGroup", "CyclicGroup", "MatrixGroup", "PermutationGroup", "SO2", "SO3",
    "tetrahedral", "octahedral", "icosahedral", "axis_rotations", "ROTATION_GROUPS", "symmetric", "cyclic_shifts",
    "rotation_matrix",
    "Action", "Trivial", "ImageRotation", "LatticeRotation", "VectorRotation", "PermutationAction", "Symmetry",
    "pad_for_rotation", "border_value",
    "augment_orbits", "orbit_permutation", "RandomAugmentation", "draw_elements", "image_augmentation",
    "orbit_same_predictions", "relative_orbit_std", "equivariance_error", "summarize", "orbit_outputs",
    "ensemble_orbit_metrics",
    "InfiniteWidthEnsemble",
]
