"""The study's configuration: one plain dataclass with ``quick`` / ``full`` / ``tiny`` presets.

Common fields describe the reference network and its training (every part trains it); the fields of a
part carry its prefix (``regime_*``, ``width_*``, ...). A part's results are tied to the values of the
fields it reads (:meth:`StudyConfig.part_config`), so ``--resume`` re-runs exactly the parts whose
settings changed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields

from ..data.datasets import DATASETS
from ..errors import DeepensError, check_choice, check_int, check_real

__all__ = ["StudyConfig", "PRESETS", "COMMON_FIELDS"]

PRESETS = ("quick", "full", "tiny")

COMMON_FIELDS = ("dataset", "data_dir", "num_samples", "model", "widths", "epochs", "batch_size", "lr", "schedule",
                 "weight_decay", "seed")


def _members(name: str, values, *, minimum: int = 1) -> list[int]:
    if not isinstance(values, (list, tuple)) or not values:
        raise DeepensError(f"{name}: expected a non-empty list of integers, got {values!r}")
    out = sorted({check_int(name, v, minimum=minimum) for v in values})
    return out


def _reals(name: str, values, **bounds) -> list[float]:
    if not isinstance(values, (list, tuple)) or not values:
        raise DeepensError(f"{name}: expected a non-empty list of numbers, got {values!r}")
    return sorted({float(check_real(name, v, **bounds)) for v in values})


@dataclass
class StudyConfig:
    """Settings of ``deepens study`` (EE §5, App. C–D at small scale, and the power-laws pool)."""

    preset: str = "quick"
    # data and the reference network (every part)
    dataset: str = "digits"
    data_dir: str | None = None
    num_samples: int | None = None
    model: str = "mlp"
    widths: list[int] = field(default_factory=lambda: [128, 128])
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    schedule: str = "cosine"
    weight_decay: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    # regime transition (EE Fig. 2)
    regime_p: list[float] = field(default_factory=lambda: [0.0, 0.5, 0.7, 1.0])
    regime_members: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    # width scaling (EE Fig. 3)
    width_multipliers: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    width_members: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    # gradient scaling (EE Fig. 4)
    gradient_members: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    gradient_wide: float = 4.0
    gradient_lr: float = 0.01
    # LLD learning-rate grid (EE Fig. 5)
    lld_lrs: list[float] = field(default_factory=lambda: [0.003, 0.006, 0.01, 0.02, 0.03, 0.06, 0.1, 0.2])
    lld_members: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    # MC dropout (EE App. D.3)
    mcd_members: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    mcd_sigma: float = 0.1
    # gradient orthogonality (EE Fig. 6)
    ortho_widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    ortho_members: int = 8
    ortho_seeds: int = 3
    ortho_samples: int = 64
    # power laws (power-laws paper §3-7)
    scaling_multipliers: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])
    scaling_pool: int = 32
    scaling_predict_k: int = 4
    scaling_partitions: int = 8  # random partitions of the pool into disjoint ensembles, averaged
    scaling_cv: str = "auto"  # calibration: halves (test-time CV), none (τ on the whole test set), auto

    @classmethod
    def preset_config(cls, name: str, **overrides) -> StudyConfig:
        """The ``quick`` (make demo, < 10 min on 2 cores), ``full`` or ``tiny`` (tests) settings."""
        check_choice("preset", name, PRESETS)
        if name == "quick":
            base = cls()
        elif name == "full":
            base = cls(preset="full", epochs=60, lr=0.01,  # EE App. C: lr 0.01; γ = M up to M = 32
                       regime_p=[0.0, 0.2, 0.4, 0.55, 0.6, 0.65, 0.8, 1.0], regime_members=[1, 2, 4, 8, 16, 32],
                       width_members=[1, 2, 4, 8, 16],
                       gradient_members=[1, 2, 4, 8, 16],
                       lld_lrs=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0],
                       lld_members=[1, 2, 4, 8, 16, 32],
                       mcd_members=[1, 2, 4, 8, 16],
                       ortho_widths=[32, 64, 128, 256, 512, 1024, 2048], ortho_seeds=5,
                       scaling_multipliers=[0.25, 0.5, 1.0, 2.0], scaling_pool=64)
        else:
            base = cls(preset="tiny", widths=[16, 16], epochs=2, batch_size=128,
                       regime_p=[0.0, 1.0], regime_members=[1, 2],
                       width_multipliers=[0.5, 1.0], width_members=[1, 2],
                       gradient_members=[1, 2], gradient_wide=2.0,
                       lld_lrs=[0.01, 0.1], lld_members=[1, 2],
                       mcd_members=[1, 2],
                       ortho_widths=[16, 64], ortho_members=3, ortho_seeds=2, ortho_samples=16,
                       scaling_multipliers=[0.5, 1.0], scaling_pool=9, scaling_predict_k=3,
                       scaling_partitions=2)
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise DeepensError(f"study: unknown option(s) {', '.join(unknown)}")
        return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None}).validate()

    def validate(self) -> StudyConfig:
        check_choice("preset", self.preset, PRESETS)
        check_choice("dataset", self.dataset, DATASETS)
        if self.dataset in ("cifar10", "cifar100") and not self.data_dir:
            raise DeepensError(f"data_dir: {self.dataset} is read from a local directory; pass --data-dir DIR")
        check_choice("model", self.model, ("mlp", "convnet"))
        if self.model == "convnet" and self.dataset in ("mnist1d", "gaussians"):
            raise DeepensError(f"model: convnet needs image data (digits, cifar10, cifar100), not {self.dataset}")
        if not isinstance(self.widths, (list, tuple)) or not self.widths:
            raise DeepensError(f"widths: expected a list of hidden widths such as 128,128, got {self.widths!r}")
        self.widths = [check_int("widths", w, minimum=1) for w in self.widths]
        for name in ("epochs", "batch_size", "ortho_members", "ortho_seeds", "ortho_samples", "scaling_pool",
                     "scaling_predict_k", "scaling_partitions"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("seed", self.seed, minimum=0)
        if self.num_samples is not None:
            check_int("num_samples", self.num_samples, minimum=10)
        for name in ("lr", "weight_decay", "gradient_lr", "gradient_wide", "mcd_sigma"):
            check_real(name, getattr(self, name), low=0.0, low_open=name not in ("weight_decay",))
        self.regime_p = _reals("regime_p", self.regime_p, low=0.0, high=1.0)
        self.width_multipliers = _reals("width_multipliers", self.width_multipliers, low=0.0, low_open=True)
        self.scaling_multipliers = _reals("scaling_multipliers", self.scaling_multipliers, low=0.0, low_open=True)
        self.lld_lrs = _reals("lld_lrs", self.lld_lrs, low=0.0, low_open=True)
        for name in ("regime_members", "width_members", "gradient_members", "lld_members", "mcd_members",
                     "ortho_widths"):
            setattr(self, name, _members(name, getattr(self, name)))
        if self.ortho_members < 2:
            raise DeepensError("ortho_members: gradient cosines need at least 2 members")
        need = max(9, 2 * (self.scaling_predict_k + 1))
        if self.scaling_pool < need:
            raise DeepensError(f"scaling_pool: a power law needs 3 sizes with >= 3 ensembles each and a prediction "
                               f"from n <= {self.scaling_predict_k} needs larger n to test: at least {need} networks, "
                               f"got {self.scaling_pool}")
        check_choice("scaling_cv", self.scaling_cv, ("auto", "halves", "none"))
        if len(self.scaling_multipliers) < 2:
            raise DeepensError("scaling_multipliers: the memory split needs at least 2 widths")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def part_config(self, prefix: str) -> dict:
        """The fields a part reads: the common ones and those starting with ``prefix``."""
        d = self.to_dict()
        return {k: v for k, v in d.items() if k in COMMON_FIELDS or k.startswith(prefix + "_")}
