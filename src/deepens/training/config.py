"""The training configuration: a plain dataclass that serialises to a run's ``config.json``.

Every option of ``deepens train`` is a field here (the CLI builds this object); ``validate()`` raises
a :class:`DeepensError` naming the option and what it expects.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..data.datasets import DATASETS, IMAGE_DATASETS, LOCAL_DATASETS
from ..errors import DeepensError, check_choice, check_int, check_real
from ..layers.distributions import Distribution, parse_distribution
from ..models.convnet import POOLS

__all__ = ["TrainConfig", "parse_modulation", "parse_gamma", "ENSEMBLES", "MODELS", "SCHEDULES", "FAMILIES",
           "FAMILY_WIDTH"]

ENSEMBLES = ("deep", "batch", "mc-dropout", "lld", "vectorized", "collegial")
MODELS = ("mlp", "convnet", "vgg16", "wrn", "resnext29")
# the default of ``width`` per family: a multiplier of the MLP widths / ConvNet channels (1), or the paper's w
# (VGG16 at w = 64: PL's 15.3M parameters; WRN-28-10 at w = 160)
FAMILY_WIDTH = {"mlp": 1.0, "convnet": 1.0, "vgg16": 64.0, "wrn": 160.0, "resnext29": 64.0}
# one line per family, for ``deepens models`` and the docs
FAMILIES = {
    "mlp": "multilayer perceptron (--widths, --width multiplies them); vectors",
    "convnet": "EE paper's ConvNet, App. C: 4 conv 3x3 (64-128-256-512 x width), max pooling (--pool avg: average)",
    "vgg16": "PL paper's VGG16, App. A: conv [w, 2w, 4w, 8w] + batch norm, fc 8w; --width = w (64: 15.3M on CIFAR-100)",
    "wrn": "PL paper's WideResNet, App. A: groups [w, 2w, 4w], --depth 6n+4 (28); --width = w (160: WRN-28-10)",
    "resnext29": "CE paper's ResNeXt-29 C x dd: --cardinality C (8), --width = d (64); CE §4.2",
}
SCHEDULES = ("constant", "step", "cosine", "ee", "multistep")
OPTIMIZERS = ("sgd", "adam")
LOSSES = ("ce", "mse")

_KIND_SPLIT = re.compile(r",\s*(?=[A-Za-z_]+\s*=)")


def parse_modulation(spec: str | None) -> dict[str, Distribution | None] | Distribution | None:
    """``"shifted-normal:0.3"`` (one distribution for every modulation) or ``"u=normal:0,1,v=constant:1"``
    (one per kind; a kind not named is absent; ``none`` marks a kind absent explicitly)."""
    if spec is None:
        return None
    if not isinstance(spec, str) or not spec.strip():
        raise DeepensError(f"modulation: expected a distribution spec such as 'shifted-normal:0.3', got {spec!r}")
    if "=" not in spec:
        return parse_distribution(spec)
    out: dict[str, Distribution | None] = {}
    for part in _KIND_SPLIT.split(spec.strip()):
        kind, _, dist = part.partition("=")
        kind = kind.strip().lower()
        if kind not in ("u", "v"):
            raise DeepensError(f"modulation {spec!r}: unknown kind {kind!r}; expected u (post-activation) or v (pre)")
        if kind in out:
            raise DeepensError(f"modulation {spec!r}: kind {kind!r} given twice")
        out[kind] = None if dist.strip().lower() == "none" else parse_distribution(dist)
    return out


def parse_gamma(gamma: Any) -> str | float | Callable[[int], float]:
    """γ(M) of EE Eq. (4): ``"1"``, ``"M"``, a positive number, or a callable M ↦ γ."""
    if callable(gamma):
        return gamma
    if isinstance(gamma, str):
        text = gamma.strip()
        if text.upper() == "M":
            return "M"
        try:
            value = float(text)
        except ValueError:
            raise DeepensError(f"gamma: expected a number, 1 or M, got {gamma!r}") from None
    elif isinstance(gamma, (int, float)) and not isinstance(gamma, bool):
        value = float(gamma)
    else:
        raise DeepensError(f"gamma: expected a number, 1 or M, got {gamma!r}")
    if not math.isfinite(value) or value <= 0:
        raise DeepensError(f"gamma: expected a positive number, 1 or M, got {gamma!r}")
    return value


# options added after stores existed: left out of the canonical form at their defaults
_LATER_FIELDS = {"pool": "max", "depth": None, "cardinality": None, "milestones": None, "amp": None,
                 "channels_last": False, "compile": False}


@dataclass
class TrainConfig:
    """Everything needed to (re-)run one training of one ensemble."""

    # data
    dataset: str = "digits"
    data_dir: str | None = None
    num_samples: int | None = None
    val: float = 0.1
    flatten: bool | None = None  # None: vectors for an MLP, images for a ConvNet
    augment: str | None = None  # cK: full C_K rotation orbits; so2: random rotations; crop-flip (per member); both
    # reference network
    model: str = "mlp"
    widths: list[int] = field(default_factory=lambda: [128, 128])
    width: float | None = None  # MLP widths / ConvNet channels multiplier; the paper's w for vgg16 and wrn
    depth: int | None = None  # WideResNet depth 6n + 4 (default 28)
    cardinality: int | None = None  # ResNeXt-29 groups C (default 8)
    pool: str = "max"  # ConvNet pooling: max (EE App. C) or avg (closed-form infinite-width kernel)
    activation: str = "relu"
    bias: bool = False
    parameterization: str = "standard"
    # ensemble
    ensemble: str = "deep"
    members: int = 8
    multiplicity: int = 1  # collegial: each member sums m networks of the given widths with m^{-1/2} (CE Eq. 4)
    modulation: str | None = None  # default per kind: batch N(0,1) u and v; mc-dropout bernoulli; lld N(0,1)
    layers: list[int] | None = None  # hidden layers carrying modulations (batch, mc-dropout); None: all
    trainable: bool = True  # BatchEnsemble modulations trainable (False: frozen)
    resample: bool = False  # MC dropout: new masks at every forward
    modulate_input: bool = False
    modulate_output: bool = False
    # optimisation (EE Eqs. 2-4)
    epochs: int = 40
    batch_size: int = 128
    batches: str = "shared"  # shared | independent
    optimizer: str = "sgd"
    lr: float = 0.05  # η_w, shared parameters
    lr_individual: float | None = None  # η_u, individual parameters (None: same as lr)
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0  # the networks' weights: shared ones, or the members' own in a deep ensemble
    weight_decay_individual: float = 0.0  # per-member modulations (and batch norms) of embedded ensembles
    gamma: Any = "M"  # γ(M): "1", "M", a number (or a callable in the Python API)
    schedule: str = "constant"
    step_size: int = 30  # step schedule: epochs between decays
    step_factor: float = 0.1  # step / multistep schedules: multiplier at each decay
    milestones: list[int] | None = None  # multistep schedule: the epochs at which the lr is multiplied
    decay_start: float = 0.5  # ee schedule: fraction of training at constant lr before the linear decay
    final_lr: float = 1e-4  # ee schedule: lr at the end; cosine: minimum lr
    loss: str = "ce"
    # run
    seed: int = 0
    data_seed: int | None = None  # seed of the train / val / test split (None: seed); fix it to pool networks
    device: str = "cpu"
    amp: str | None = None  # bf16 | fp16: autocast for the forward (fp16 with a gradient scaler)
    channels_last: bool = False  # channels-last memory format for convolutional networks
    compile: bool = False  # torch.compile the ensemble (falls back to eager where unsupported)
    eval_every: int = 1
    eval_batch_size: int = 1024
    checkpoint_seconds: float = 30.0  # checkpoint at an epoch's end once this long since the last (0: every epoch)

    def validate(self) -> TrainConfig:
        check_choice("dataset", self.dataset, DATASETS)
        if self.dataset in LOCAL_DATASETS and not self.data_dir:
            raise DeepensError(f"data_dir: {self.dataset} is read from a local directory; pass --data-dir DIR")
        check_choice("model", self.model, MODELS)
        check_choice("pool", self.pool, POOLS)
        if self.pool != "max" and self.model != "convnet":
            raise DeepensError(f"pool: only the convnet has poolings to choose, not the {self.model}")
        if self.augment is not None:
            from .augmentation import split_augment

            split_augment(self.augment)
            if self.dataset not in IMAGE_DATASETS:
                raise DeepensError(f"augment: rotations act on images ({', '.join(IMAGE_DATASETS)}), not "
                                   f"{self.dataset}")
        if self.model != "mlp" and self.dataset in ("mnist1d", "gaussians"):
            raise DeepensError(f"model: {self.model} needs image data ({', '.join(IMAGE_DATASETS)}), not "
                               f"{self.dataset}")
        if self.model != "mlp" and self.flatten:
            raise DeepensError(f"flatten: a {self.model} takes images; drop --flatten")
        if not isinstance(self.widths, (list, tuple)) or not self.widths:
            raise DeepensError(f"widths: expected a list of hidden widths such as 128,128, got {self.widths!r}")
        self.widths = [check_int("widths", w, minimum=1) for w in self.widths]
        if self.width is None:
            self.width = FAMILY_WIDTH[self.model]
        check_real("width", self.width, low=0.0, low_open=True)
        if self.model in ("vgg16", "wrn", "resnext29") and float(self.width) != int(self.width):
            raise DeepensError(f"width: the {self.model}'s w is a number of filters, got {self.width}")
        if self.depth is not None:
            if self.model != "wrn":
                raise DeepensError(f"depth: only the wrn has a depth to choose, not the {self.model}")
            depth = check_int("depth", self.depth, minimum=10)
            if (depth - 4) % 6:
                raise DeepensError(f"depth: expected 6n + 4 (10, 16, 22, 28, 40, ...), got {self.depth}")
        if self.cardinality is not None:
            if self.model != "resnext29":
                raise DeepensError(f"cardinality: only the resnext29 has groups to choose, not the {self.model}")
            check_int("cardinality", self.cardinality, minimum=1)
        check_choice("ensemble", self.ensemble, ENSEMBLES)
        check_int("members", self.members, minimum=1)
        check_int("multiplicity", self.multiplicity, minimum=1)
        if self.ensemble == "collegial" and self.model != "mlp":
            raise DeepensError("model: a collegial ensemble (block-diagonal layers) is built from an MLP; "
                               "use --model mlp")
        if self.multiplicity != 1 and self.ensemble != "collegial":
            raise DeepensError("multiplicity: only a collegial ensemble has a multiplicity; "
                               f"got --ensemble {self.ensemble}")
        parse_modulation(self.modulation)
        if self.layers is not None:
            self.layers = [check_int("layers", i) for i in self.layers]
        check_int("epochs", self.epochs, minimum=0)
        check_int("batch_size", self.batch_size, minimum=1)
        check_choice("batches", self.batches, ("shared", "independent"))
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_real("lr", self.lr, low=0.0, low_open=True)
        if self.lr_individual is not None:
            check_real("lr_individual", self.lr_individual, low=0.0)
        check_real("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        if self.nesterov and self.momentum == 0:
            raise DeepensError("nesterov: Nesterov momentum needs momentum > 0")
        check_real("weight_decay", self.weight_decay, low=0.0)
        check_real("weight_decay_individual", self.weight_decay_individual, low=0.0)
        self.gamma = parse_gamma(self.gamma)
        if self.amp is not None:
            check_choice("amp", self.amp, ("bf16", "fp16"))
        check_choice("schedule", self.schedule, SCHEDULES)
        if self.schedule == "multistep":
            if not isinstance(self.milestones, (list, tuple)) or not self.milestones:
                raise DeepensError("milestones: the multistep schedule needs the epochs of its decays, e.g. 150,225")
            self.milestones = [check_int("milestones", m, minimum=1) for m in self.milestones]
            if self.milestones != sorted(set(self.milestones)):
                raise DeepensError(f"milestones: expected increasing epochs, got {self.milestones}")
        elif self.milestones is not None:
            raise DeepensError("milestones: only the multistep schedule has milestones")
        check_int("step_size", self.step_size, minimum=1)
        check_real("step_factor", self.step_factor, low=0.0, low_open=True)
        check_real("decay_start", self.decay_start, low=0.0, high=1.0)
        check_real("final_lr", self.final_lr, low=0.0)
        check_choice("loss", self.loss, LOSSES)
        check_int("seed", self.seed)
        if self.data_seed is not None:
            check_int("data_seed", self.data_seed)
        check_int("eval_every", self.eval_every, minimum=1)
        check_int("eval_batch_size", self.eval_batch_size, minimum=1)
        check_real("checkpoint_seconds", self.checkpoint_seconds, low=0.0)
        if isinstance(self.val, bool) or not isinstance(self.val, (int, float)):
            raise DeepensError(f"val: expected a fraction in [0, 1) or a count, got {self.val!r}")
        return self

    def split_seed(self) -> int:
        """The seed of the data split: ``data_seed``, or ``seed`` when it is None."""
        return self.seed if self.data_seed is None else self.data_seed

    def gamma_value(self) -> float:
        """γ(M) for this ensemble's M."""
        g = parse_gamma(self.gamma)
        if g == "M":
            return float(self.members)
        if callable(g):
            return float(g(self.members))
        return float(g)

    def canonical(self) -> dict:
        """The validated options as a plain dict with one spelling per training: ``data_seed`` equal to ``seed``
        as None (the same split), integral floats (``width: 1``) as floats."""
        data = TrainConfig.from_dict(self.to_dict()).validate().to_dict()
        if data.get("data_seed") == data["seed"]:
            data["data_seed"] = None
        for name, default in _LATER_FIELDS.items():  # stores written before these options existed keep their keys
            if data.get(name) == default:
                data.pop(name)
        for f in fields(self):
            if f.type in ("float", "float | None") and f.name != "val":
                value = data.get(f.name)
                if isinstance(value, int) and not isinstance(value, bool):
                    data[f.name] = float(value)
        return data

    def to_dict(self) -> dict:
        data = asdict(self)
        if callable(self.gamma):
            data["gamma"] = f"callable:{getattr(self.gamma, '__name__', 'gamma')}"
        elif isinstance(self.gamma, float) and self.gamma.is_integer():
            data["gamma"] = str(int(self.gamma))
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        if not isinstance(data, dict):
            raise DeepensError(f"config: expected a JSON object of training options, got {type(data).__name__}")
        data = data.get("train", data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DeepensError(f"config: unknown option(s) {', '.join(unknown)}")
        if isinstance(data.get("gamma"), str) and data["gamma"].startswith("callable:"):
            raise DeepensError("config: this run used a Python callable for gamma; re-create it in Python")
        return cls(**data)
