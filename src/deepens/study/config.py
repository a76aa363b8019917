"""The study's configuration: one plain dataclass with ``tiny`` / ``quick`` / ``full`` presets.

Fields that every part reads: ``seed`` (every random choice) and ``seeds`` (how many seeds a noisy effect is
measured over). The Embedded Ensembles parts train the *reference* setup (``dataset`` … ``weight_decay``);
every other field belongs to one part and carries its prefix (``regime_*``, ``alpha_*``, ``ising_*``, ...).
A part's results are tied to the values of the fields it reads (:meth:`StudyConfig.part_config`), so
``--resume`` re-runs exactly the parts whose settings changed.

Presets: ``tiny`` (every part in seconds; the tests), ``quick`` (``make demo``: all four papers in under 10
minutes on 2 CPU cores), ``full`` (the former stand-alone experiments' settings and the EE grids; hours on a
CPU), ``paper`` (each paper's own data, networks and recipes: CIFAR-100 and the EE ConvNet, MNIST MLPs for the
collegial designs, FashionMNIST CNNs, CIFAR-100 VGG16 pools; needs ``data_dir`` and, to finish, GPUs —
``deepens study --preset paper --plan`` counts the trainings and times them first).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import asdict, dataclass, field, fields

from ..data.datasets import DATASETS, IMAGE_DATASETS, LOCAL_DATASETS
from ..errors import DeepensError, check_choice, check_int, check_real
from ..models.convnet import POOLS

__all__ = ["StudyConfig", "PRESETS", "STUDY_FIELDS", "REFERENCE_FIELDS"]

PRESETS = ("tiny", "quick", "full", "paper")

STUDY_FIELDS = ("seed", "seeds", "data_dir")
SEQUENCES = ("widths", "digits_channels", "so2_channels")  # ordered sizes, kept as given
REFERENCE_FIELDS = ("recipe", "dataset", "data_dir", "num_samples", "val", "model", "pool", "widths", "epochs",
                    "batch_size", "lr", "schedule", "weight_decay")
EQUIVARIANCE_DATASETS = ("digits", "fashion-mnist", "mnist")


def _ints(name: str, values, *, minimum: int = 1) -> list[int]:
    if not isinstance(values, (list, tuple)) or not values:
        raise DeepensError(f"{name}: expected a non-empty list of integers, got {values!r}")
    return sorted({check_int(name, v, minimum=minimum) for v in values})


def _reals(name: str, values, **bounds) -> list[float]:
    if not isinstance(values, (list, tuple)) or not values:
        raise DeepensError(f"{name}: expected a non-empty list of numbers, got {values!r}")
    return sorted({float(check_real(name, v, **bounds)) for v in values})


def _L(*values):  # noqa: N802 - a list default
    return field(default_factory=lambda: list(values))


@dataclass
class StudyConfig:
    """Settings of ``deepens study``: every experiment of the four papers at small scale."""

    preset: str = "quick"
    seed: int = 0
    seeds: int = 3  # seeds of every noisy measurement (mean ± std)
    device: str = "cpu"

    # ---- the reference setup of the Embedded Ensembles parts
    recipe: str | None = None  # a training recipe (deepens.training.recipes) under the fields below
    dataset: str = "digits"
    data_dir: str | None = None
    num_samples: int | None = None
    val: float | None = None  # held-out training examples (count, or fraction < 1); None: the recipe's or 10 %
    model: str = "mlp"
    pool: str = "max"  # convnet pooling: max (EE App. C) or avg (closed-form infinite-width kernels)
    widths: list[int] = _L(128, 128)
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    schedule: str = "cosine"
    weight_decay: float = 1e-3
    # regime transition (EE Fig. 2)
    regime_p: list[float] = _L(0.0, 0.4, 0.8, 1.0)
    regime_members: list[int] = _L(1, 4, 8)
    # width scaling (EE Fig. 3)
    width_multipliers: list[float] = _L(0.5, 1.0, 2.0)
    width_members: list[int] = _L(1, 2, 4, 8)
    # gradient scaling (EE Fig. 4)
    gradient_members: list[int] = _L(1, 2, 4, 8)
    gradient_wide: float = 4.0
    gradient_lr: float = 0.01
    gradient_epochs: int = 8
    # LLD learning rates (EE Fig. 5)
    lld_lrs: list[float] = _L(0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
    lld_members: list[int] = _L(1, 2, 4, 8)
    # MC dropout (EE App. D.3)
    mcd_members: list[int] = _L(1, 2, 8)
    mcd_sigma: float = 0.1
    # gradient orthogonality (EE Fig. 6 centre/right)
    ortho_widths: list[int] = _L(32, 64, 128, 256, 512)
    ortho_members: int = 8
    ortho_samples: int = 64
    # gradient norms with and without input/output modulations (EE Fig. 6 left)
    gradnorm_draws: int = 16
    gradnorm_members: int = 8
    gradnorm_samples: int = 64
    # NTK constancy during training (EE App. B.6)
    constancy_widths: list[int] = _L(64, 256, 1024)
    constancy_members: int = 4
    constancy_samples: int = 64
    constancy_steps: int = 100
    constancy_lr: float = 0.25
    # ablation (EE App. D.1, Fig. 7)
    ablation_members: int = 8
    ablation_lr_factor: float = 5.0
    # NTK interaction metrics at initialisation (EE App. D.2, Fig. 8)
    interaction_widths: list[int] = _L(32, 64, 128, 256)
    interaction_members: int = 8
    interaction_samples: int = 8
    # LLD with N(p, 1 − p²) masks (EE App. D.4, Fig. 12)
    lldmask_p: list[float] = _L(0.0, 0.5, 0.9)
    lldmask_members: list[int] = _L(1, 4, 16)
    lldmask_lr: float = 0.01  # γ = M: the stable step shrinks like 1/M (the lld part measures it)

    # ---- Collegial ensembles
    # Algorithm 1: α of the MLP the primal/dual experiment trains (input → 6 dense layers)
    alpha_widths: list[int] = _L(8, 16, 32, 64, 128)
    alpha_draws: int = 300
    # Var(K^e) = Var(K_n)/m (CE Eq. 11) and K^e → NMK (Lemma 1), with real collegial modules
    variance_width: int = 8
    variance_m: list[int] = _L(1, 2, 4, 8)
    variance_draws: int = 1000
    # NMK vs the analytic infinite-width NTK (CE Fig. 2)
    nmk_widths: list[int] = _L(16, 64, 256)
    nmk_draws: int = 300
    # CE Fig. 3 and ResNeXt-29: Algorithm 2 on the paper's baselines
    design_draws: int = 200
    design_widths: list[int] = _L(16, 32, 64, 128)
    # CE Fig. 4: collegial ensembles on the primal and dual curves, trained
    primaldual_dataset: str = "digits"  # digits, mnist1d or mnist (the paper's; with data_dir)
    primaldual_widths: list[int] = _L(8, 16, 32, 64, 200)
    primaldual_baseline: int = 200
    primaldual_epochs: int = 15
    primaldual_members: int = 3  # seeds, trained as the members of one vectorized run
    # Theorem 1: NTK drift ∝ 1/(m·n) (CE Fig. 9)
    drift_d: list[int] = _L(4, 8, 16)
    drift_activations: list[str] = _L("erf")
    drift_steps: int = 100
    drift_draws: int = 4

    # ---- Emergent equivariance
    ising_size: int = 6
    ising_samples: int = 128
    ising_widths: list[int] = _L(64, 256, 1024)
    ising_members: int = 16
    ising_steps: int = 100
    ising_lr: float = 3.0
    ising_test: int = 64
    cross_groups: list[str] = _L("c1", "c4", "t", "o")
    cross_samples: int = 32
    cross_width: int = 128
    cross_members: int = 16
    cross_steps: int = 150
    cross_lr: float = 1.0
    cross_test: int = 64
    cross_rotations: int = 8
    cross_ood_scale: float = 3.0
    digits_dataset: str = "digits"  # digits (shipped), fashion-mnist or mnist (the talk's; with data_dir)
    digits_groups: list[int] = _L(4, 8)
    digits_members: int = 4
    digits_steps: int = 100
    digits_batch_size: int = 128
    digits_lr: float = 2e-3
    digits_channels: list[int] = _L(8, 16, 32, 64)
    digits_evals: int = 2
    digits_ood: int = 100
    digits_test: int = 180
    digits_infinite: int = 24  # training digits (× their C4 orbits) of the infinite-width CNN ensemble (0: none)
    so2_dataset: str = "digits"
    so2_rotations: list[int] = _L(1, 2, 8)  # random rotations of every training image per step
    so2_members: int = 4
    so2_steps: int = 100
    so2_batch_size: int = 32
    so2_lr: float = 2e-3
    so2_channels: list[int] = _L(4, 8, 16, 32)
    so2_test: int = 180
    so2_test_rotations: int = 16

    # ---- Power laws
    pool_dataset: str = "mnist1d"
    pool_num_samples: int = 10_000
    pool_model: str = "mlp"  # mlp (40 → w → w → 10), vgg16 or wrn (w: the family's width, PL App. A)
    pool_recipe: str | None = None  # a training recipe under the pool's fields (pl-vgg, pl-wrn)
    pool_widths: list[int] = _L(16, 32, 48, 64)  # hidden widths of 40 → w → w → 10
    pool_size: int = 32  # networks per width (the paper's N)
    pool_scale: float = 0.0  # > 0: ℓ = max(pool_size, ⌈pool_scale · s_largest / s⌉) networks of size s (PL §3: 8)
    pool_chunk: int = 0  # networks per training (0: a width's whole pool in one vectorized training)
    pool_batch_size: int = 128
    pool_epochs: int = 20
    pool_lr: float = 0.05
    pool_weight_decay: float = 5e-4
    pool_predict_k: int = 4
    pool_partitions: int = 4
    calib_temperatures: list[float] = _L(0.5, 1.0, 2.0)
    calib_tail: int = 4  # Proposition 1: fit c + b/n on n >= calib_tail

    # The ``paper`` preset: the ``full`` grids on each paper's own data, networks and recipes. Where a paper
    # leaves a value open, the choice is the recipe's (deepens.training.recipes) or says so here.
    PAPER: typing.ClassVar[dict] = dict(
        preset="paper", device="auto", seeds=3,  # seeds: the EE figures' error bars; 3 keeps it within reach
        # EE App. C: CIFAR-100, the 4-layer ConvNet, SGD 0.9, batch 128, lr 0.01 then linear decay to 1e-4 after
        # half of the 1000 epochs, 10k held-out images (the recipe ee-convnet)
        recipe="ee-convnet", dataset="cifar100", model="convnet", pool="max", epochs=1000, batch_size=128,
        lr=0.01, schedule="ee", weight_decay=5e-4, gradient_epochs=100,
        # CE §4.1 (Fig. 4): MLPs with L = 6 layers, baseline width 200, MNIST, Adam for 70 epochs, averaged over
        # 100 repetitions (here the members of one vectorized run per design)
        primaldual_dataset="mnist", primaldual_epochs=70, primaldual_members=100,
        # the talk: CNN ensembles on FashionMNIST augmented by C4, C8, C16 and sampled SO(2) rotations; OOD
        # images from CIFAR-10 (greyscale, resized) and noise. Steps, widths, members: not in the talk
        digits_dataset="fashion-mnist", digits_groups=[4, 8, 16], digits_members=8, digits_steps=20_000,
        digits_batch_size=128, digits_channels=[32, 64, 64, 128], digits_evals=5, digits_ood=1000,
        digits_test=2000, digits_infinite=64,
        so2_dataset="fashion-mnist", so2_rotations=[1, 2, 4, 8, 16], so2_members=8, so2_steps=20_000,
        so2_batch_size=128, so2_channels=[32, 64, 64, 128], so2_test=2000, so2_test_rotations=32,
        # PL §3, §5: VGG16 on CIFAR-100 at w = 8..64, ℓ = max(64, 8·s_std/s) networks per width (s_std: w = 64),
        # 200 epochs (the recipe pl-vgg), trained 16 networks per task
        pool_dataset="cifar100", pool_model="vgg16", pool_recipe="pl-vgg", pool_widths=[8, 16, 32, 64],
        pool_size=64, pool_scale=8.0, pool_chunk=16, pool_epochs=200, pool_lr=0.05, pool_weight_decay=5e-4,
        pool_batch_size=128, pool_partitions=8,
    )

    @classmethod
    def preset_config(cls, name: str, **overrides) -> StudyConfig:
        """The ``tiny``, ``quick`` (``make demo``), ``full`` or ``paper`` settings, with ``overrides``."""
        check_choice("preset", name, PRESETS)
        if name == "quick":
            base = cls()
        elif name == "full":
            base = cls(preset="full", seeds=5, epochs=60, lr=0.01,  # EE App. C: lr 0.01
                       regime_p=[0.0, 0.2, 0.4, 0.55, 0.6, 0.65, 0.8, 1.0], regime_members=[1, 2, 4, 8, 16, 32],
                       width_multipliers=[0.25, 0.5, 1.0, 2.0, 4.0], width_members=[1, 2, 4, 8, 16],
                       gradient_members=[1, 2, 4, 8, 16], gradient_epochs=20,
                       lld_lrs=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0],
                       lld_members=[1, 2, 4, 8, 16, 32],
                       mcd_members=[1, 2, 4, 8, 16],
                       ortho_widths=[32, 64, 128, 256, 512, 1024, 2048],
                       gradnorm_draws=64, constancy_widths=[64, 256, 1024, 4096], constancy_steps=200,
                       ablation_members=8, interaction_widths=[32, 64, 128, 256, 512], interaction_members=15,
                       lldmask_p=[0.0, 0.3, 0.6, 0.9], lldmask_members=[1, 2, 4, 8, 16, 32, 64], lldmask_lr=0.002,
                       alpha_draws=2000, variance_draws=4000, variance_m=[1, 2, 4, 8, 16], nmk_draws=2000,
                       design_draws=2000,
                       primaldual_widths=[8, 12, 16, 24, 32, 48, 64, 100, 200], primaldual_epochs=70,
                       primaldual_members=5,
                       drift_d=[4, 8, 16, 32], drift_activations=["erf", "relu"], drift_steps=200, drift_draws=8,
                       ising_widths=[64, 256, 1024, 2048], ising_members=32, ising_steps=200, ising_test=128,
                       cross_samples=48, cross_members=32, cross_steps=300, cross_test=128, cross_rotations=16,
                       digits_groups=[4, 8, 16], digits_members=8, digits_steps=300, digits_evals=4, digits_ood=200,
                       digits_test=360, digits_infinite=64,
                       so2_rotations=[1, 2, 4, 8, 16], so2_members=4, so2_steps=200, so2_batch_size=64,
                       so2_channels=[8, 16, 32, 64], so2_test=360, so2_test_rotations=32,
                       pool_widths=[16, 32, 64, 128], pool_size=48, pool_epochs=60, pool_partitions=8,
                       calib_temperatures=[0.5, 0.75, 1.0, 1.5, 2.0])
        elif name == "paper":
            base = dataclasses.replace(cls.preset_config("full"), **cls.PAPER)
        else:
            base = cls(preset="tiny", seeds=2, widths=[16, 16], epochs=2, batch_size=128,
                       regime_p=[0.0, 0.5, 1.0], regime_members=[1, 2],
                       width_multipliers=[0.5, 1.0], width_members=[1, 2],
                       gradient_members=[1, 2], gradient_wide=2.0, gradient_epochs=2,
                       lld_lrs=[0.01, 0.1], lld_members=[1, 2],
                       mcd_members=[1, 2],
                       ortho_widths=[16, 64], ortho_members=3, ortho_samples=16,
                       gradnorm_draws=3, gradnorm_members=3, gradnorm_samples=16,
                       constancy_widths=[16, 64], constancy_members=2, constancy_samples=16, constancy_steps=5,
                       ablation_members=2,
                       interaction_widths=[8, 16], interaction_members=3, interaction_samples=4,
                       lldmask_p=[0.0, 0.9], lldmask_members=[1, 2],
                       alpha_widths=[4, 8, 16], alpha_draws=40,
                       variance_width=4, variance_m=[1, 2], variance_draws=120,
                       nmk_widths=[8, 16], nmk_draws=40,
                       design_draws=20, design_widths=[16, 32],
                       primaldual_widths=[8, 32], primaldual_baseline=32, primaldual_epochs=1, primaldual_members=2,
                       drift_d=[2, 4], drift_steps=3, drift_draws=2,
                       ising_size=3, ising_samples=8, ising_widths=[8, 32], ising_members=4, ising_steps=5,
                       ising_test=8,
                       cross_groups=["c1", "c4"], cross_samples=4, cross_width=16, cross_members=3, cross_steps=5,
                       cross_test=6, cross_rotations=3,
                       digits_groups=[4], digits_members=2, digits_steps=4, digits_batch_size=32,
                       digits_channels=[2, 4, 4, 8], digits_ood=6, digits_test=12,
                       digits_infinite=4,
                       so2_rotations=[1, 2], so2_members=2, so2_steps=4, so2_batch_size=16, so2_channels=[2, 4, 4, 8],
                       so2_test=12, so2_test_rotations=4,
                       pool_num_samples=600, pool_widths=[8, 16], pool_size=10, pool_epochs=2, pool_predict_k=3,
                       pool_partitions=2, calib_tail=2)
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise DeepensError(f"study: unknown option(s) {', '.join(unknown)}")
        return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None}).validate()

    def validate(self) -> StudyConfig:
        from ..training.recipes import RECIPES

        check_choice("preset", self.preset, PRESETS)
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("pool_dataset", self.pool_dataset, ("mnist1d", "digits", "cifar10", "cifar100"))
        check_choice("pool_model", self.pool_model, ("mlp", "vgg16", "wrn"))
        check_choice("primaldual_dataset", self.primaldual_dataset, ("digits", "mnist1d", "mnist", "fashion-mnist"))
        check_choice("digits_dataset", self.digits_dataset, EQUIVARIANCE_DATASETS)
        check_choice("so2_dataset", self.so2_dataset, EQUIVARIANCE_DATASETS)
        for name in ("recipe", "pool_recipe"):
            if getattr(self, name) is not None:
                check_choice(name, getattr(self, name), tuple(RECIPES))
        local = [f"{name} {getattr(self, name)}" for name in ("dataset", "pool_dataset", "primaldual_dataset",
                                                            "digits_dataset", "so2_dataset")
                 if getattr(self, name) in LOCAL_DATASETS]
        if local and not self.data_dir:
            raise DeepensError(f"data_dir: {', '.join(local)} read(s) files from a local directory; pass --data-dir "
                               "DIR (nothing downloads)")
        if self.pool_model != "mlp" and self.pool_dataset not in IMAGE_DATASETS:
            raise DeepensError(f"pool_model: {self.pool_model} needs image data, not {self.pool_dataset}")
        check_choice("model", self.model, ("mlp", "convnet"))
        check_choice("pool", self.pool, POOLS)
        if self.model == "convnet" and self.dataset in ("mnist1d", "gaussians"):
            raise DeepensError(f"model: convnet needs image data ({', '.join(IMAGE_DATASETS)}), not {self.dataset}")
        if not isinstance(self.widths, (list, tuple)) or not self.widths:
            raise DeepensError(f"widths: expected a list of hidden widths such as 128,128, got {self.widths!r}")
        check_int("seed", self.seed, minimum=0)
        if self.num_samples is not None:
            check_int("num_samples", self.num_samples, minimum=10)
        for name in SEQUENCES:  # layer sizes: order and repeats matter
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not value:
                raise DeepensError(f"{name}: expected a non-empty list of sizes such as 8,16,32, got {value!r}")
            setattr(self, name, [check_int(name, v, minimum=1) for v in value])
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SEQUENCES:
                continue
            if f.type == "int" and f.name not in ("seed", "num_samples"):
                check_int(f.name, value, minimum=0 if f.name in ("pool_chunk", "digits_infinite") else 1)
            elif f.type == "float":
                low_open = f.name not in ("weight_decay", "pool_weight_decay", "pool_scale")
                check_real(f.name, value, low=0.0, low_open=low_open)
            elif f.type == "list[int]":
                setattr(self, f.name, _ints(f.name, value))
            elif f.type == "list[float]":
                setattr(self, f.name, _reals(f.name, value, low=0.0, low_open=not f.name.endswith("_p")))
        for name in ("regime_p", "lldmask_p"):
            setattr(self, name, _reals(name, getattr(self, name), low=0.0, high=1.0))
        for name in ("ortho_members", "ablation_members", "interaction_members"):
            if getattr(self, name) < 2:
                raise DeepensError(f"{name}: needs at least 2 members (it compares members), got {getattr(self, name)}")
        if len(self.ortho_widths) < 2 or len(self.constancy_widths) < 2 or len(self.interaction_widths) < 2:
            raise DeepensError("ortho_widths, constancy_widths, interaction_widths: a slope needs at least 2 widths")
        if len(self.alpha_widths) < 2 or len(self.design_widths) < 2:
            raise DeepensError("alpha_widths, design_widths: fitting α needs at least 2 widths")
        if max(self.primaldual_widths) > self.primaldual_baseline:
            raise DeepensError("primaldual_widths: member widths above the baseline width have no collegial design")
        for name in self.drift_activations:
            check_choice("drift_activations", name, ("erf", "relu"))
        from ..symmetry.groups import ROTATION_GROUPS

        self.cross_groups = [str(g).strip().lower() for g in self.cross_groups]
        for g in self.cross_groups:
            check_choice("cross_groups", g, tuple(ROTATION_GROUPS))
        need = max(9, 2 * (self.pool_predict_k + 1))
        if self.pool_size < need:
            raise DeepensError(f"pool_size: a power law needs 3 sizes with >= 3 ensembles each and a prediction "
                               f"from n <= {self.pool_predict_k} needs larger n to test: at least {need} networks, "
                               f"got {self.pool_size}")
        if len(self.pool_widths) < 2:
            raise DeepensError("pool_widths: the memory split needs at least 2 widths")
        if self.calib_tail > self.pool_size // 3:
            raise DeepensError(f"calib_tail: Proposition 1's fit needs sizes n >= calib_tail averaged over >= 3 "
                               f"ensembles, so at most pool_size // 3 = {self.pool_size // 3}, got {self.calib_tail}")
        if not math.isfinite(self.ablation_lr_factor):
            raise DeepensError("ablation_lr_factor: expected a finite number")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def part_config(self, prefixes: tuple[str, ...], reference: bool = False) -> dict:
        """The fields a part reads: ``seed``, ``seeds``, the reference setup when ``reference``, and the fields
        starting with one of ``prefixes``."""
        d = self.to_dict()
        keep = set(STUDY_FIELDS) | (set(REFERENCE_FIELDS) if reference else set())
        return {k: v for k, v in d.items() if k in keep or any(k.startswith(p + "_") for p in prefixes)}
