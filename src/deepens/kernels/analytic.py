"""Analytic infinite-width NNGP and NTK of fully connected (embedded-ensemble) networks.

Conventions (NTK parameterization, as neural-tangents' ``stax``): the input kernel is x·x′/d; a dense
layer with weight std σ_w and bias std σ_b maps nngp → σ_w²·nngp + σ_b² and ntk → nngp′ + σ_w²·ntk; an
activation maps nngp → E[φ(z)φ(z′)] and ntk → ntk·E[φ′(z)φ′(z′)]. A plain MLP therefore gives what
``stax.serial(Dense, Relu/Erf, ..., Dense)`` gives with the same ``W_std``, ``b_std``.

Embedded ensembles (EE Props. 3-4, derived anew): hidden layer l may carry a pre-activation
modulation v and a post-activation modulation u, x_α = u_α ⊙ φ(v_α ⊙ z_α). With the duals Φ, Ṫ, Φz of
:mod:`deepens.kernels.duals` (same member: one draw of v; two members: independent draws) and the
next dense layer's σ_w, σ_b:

    same member  Σ′ = σ_w² U₂ Φ + σ_b²                    cross  Σ′ = σ_w² U₁² Φ + σ_b²
    common NTK   Θ′ = Σ′ + σ_w² U₂ Ṫ Θ                          Θ′ = Σ′ + σ_w² U₁² Ṫ Θ
    individual   Θ′ = σ_w² U₂ Ṫ Θ + T(u) σ_w² Φ + T(v) σ_w² U₂ Φz       (same member only)

with U₁ = E[u], U₂ = E[u²], T(·) = 1 for trainable modulations. The ensemble NTK is
Θ_{αβ} = γ(M)/M · Θ^com_{αβ} + δ_{αβ} Θ^ind (EE Eq. 9). Differences from the paper's statement: Ṫ is
E[v₁v₂ φ′(v₁z) φ′(v₂z′)], which equals V₂·Φ̇ (Eq. 35) only when v can be pulled out of φ′; the
trainable-v term carries φ′ (Eq. 43 writes φ); σ_w², σ_b² and biases are included. Shared biases add
σ_b² to the cross-member kernels, so with a readout bias members are never exactly independent.
Modulations of the network's inputs / outputs are not covered: over finitely many coordinates
their kernel does not self-average (it stays random as the widths grow).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DeepensError, check_int, check_real
from ..layers.distributions import Distribution, parse_distribution
from .duals import Dual, ErfDual, IdentityDual, Moments, ReluDual, dual_for

__all__ = ["HiddenLayer", "Network", "InfiniteWidthKernels", "infinite_width_kernels"]


@dataclass
class HiddenLayer:
    """One hidden layer: dense (σ_w, σ_b) + activation, optionally modulated (EE Eq. 1)."""

    activation: str | Callable[[torch.Tensor], torch.Tensor] = "relu"
    weight_std: float = 1.0
    bias_std: float = 0.0
    u: Distribution | None = None  # post-activation modulation
    v: Distribution | None = None  # pre-activation modulation
    train_u: bool = True
    train_v: bool = True

    def __post_init__(self) -> None:
        self.weight_std = check_real("weight_std", self.weight_std, low=0.0)
        self.bias_std = check_real("bias_std", self.bias_std, low=0.0)
        if isinstance(self.u, str):
            self.u = parse_distribution(self.u)
        if isinstance(self.v, str):
            self.v = parse_distribution(self.v)


@dataclass
class Network:
    """A fully connected network: hidden layers followed by a dense readout."""

    layers: list[HiddenLayer] = field(default_factory=list)
    readout_std: float = 1.0
    readout_bias_std: float = 0.0

    @classmethod
    def mlp(
        cls,
        depth: int,
        activation: str | Callable = "relu",
        weight_std: float = 1.0,
        bias_std: float = 0.0,
        readout_std: float = 1.0,
        readout_bias_std: float = 0.0,
        *,
        u: Distribution | str | None = None,
        v: Distribution | str | None = None,
        layers: Sequence[int] | None = None,
        trainable: bool = True,
    ) -> Network:
        """``depth`` identical hidden layers; modulations u / v at every hidden layer, or only at the
        (0-based, negative from the end) indices in ``layers``."""
        depth = check_int("depth", depth, minimum=1)
        chosen = set(range(depth)) if layers is None else {int(i) % depth for i in layers}
        if layers is not None:
            for i in layers:
                if not -depth <= int(i) < depth:
                    raise DeepensError(f"layers: index {i} out of range for depth {depth}")
        u = parse_distribution(u) if isinstance(u, str) else u
        v = parse_distribution(v) if isinstance(v, str) else v
        hidden = [
            HiddenLayer(activation, weight_std, bias_std, u if i in chosen else None, v if i in chosen else None,
                        trainable, trainable)
            for i in range(depth)
        ]
        return cls(hidden, check_real("readout_std", readout_std, low=0.0),
                   check_real("readout_bias_std", readout_bias_std, low=0.0))


@dataclass
class InfiniteWidthKernels:
    """Same-member (α = β) and cross-member (α ≠ β) output kernels, and per-layer summaries."""

    nngp_same: np.ndarray
    nngp_cross: np.ndarray
    ntk_same_common: np.ndarray
    ntk_same_individual: np.ndarray
    ntk_cross_common: np.ndarray
    common_weight: float
    layers: list[dict]

    @property
    def ntk_same(self) -> np.ndarray:
        """Θ_{αα} = γ/M Θ^com + Θ^ind."""
        return self.common_weight * self.ntk_same_common + self.ntk_same_individual

    @property
    def ntk_cross(self) -> np.ndarray:
        """Θ_{αβ}, α ≠ β = γ/M Θ^com (individual parameters never couple two members)."""
        return self.common_weight * self.ntk_cross_common

    @property
    def ntk_same_weighted_common(self) -> np.ndarray:
        return self.common_weight * self.ntk_same_common


def _moments(u: Distribution | None) -> tuple[float, float]:
    if u is None:
        return 1.0, 1.0
    return u.first_moment, u.second_moment


class _Pairs:
    """Input pairs a kernel is evaluated on: a full N1 × N2 grid, or (one symmetric input set, closed-form
    duals) the packed upper triangle i <= j, which halves the elementwise work."""

    def __init__(self, n1: int, n2: int, packed: bool) -> None:
        self.packed = packed
        self.n1, self.n2 = n1, n2
        if packed:
            self.rows, self.cols = np.triu_indices(n1)
            block = (self.rows < 64) & (self.cols < 64)
            self.block = block
            self.block_weight = np.where(self.rows[block] == self.cols[block], 1.0, 2.0)
            self.block_size = min(n1, 64) ** 2

    def variances(self, q1: np.ndarray, q2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (q1[self.rows], q2[self.cols]) if self.packed else (q1, q2)

    def full(self, values: np.ndarray) -> np.ndarray:
        if not self.packed:
            return values
        out = np.empty((self.n1, self.n1))
        out[self.rows, self.cols] = values
        out[self.cols, self.rows] = values
        return out

    def summary(self, values: np.ndarray) -> float:
        """Mean |kernel| over the leading (at most 64 × 64) block of input pairs."""
        if self.packed:
            return float(np.sum(np.abs(values[self.block]) * self.block_weight) / self.block_size)
        return float(np.mean(np.abs(values[:64, :64])))


def _closed_form(dual: Dual, v: Distribution | None) -> bool:
    if isinstance(dual, (ReluDual, IdentityDual)):
        return True
    return isinstance(dual, ErfDual) and (v is None or v.is_constant)


def infinite_width_kernels(
    x1: np.ndarray | torch.Tensor,
    x2: np.ndarray | torch.Tensor | None = None,
    network: Network | None = None,
    *,
    members: int | None = None,
    gamma: float | str = "M",
) -> InfiniteWidthKernels:
    """Infinite-width kernels of ``network`` between inputs ``x1`` (N1, d) and ``x2`` (N2, d).

    ``members`` and ``gamma`` set the weight γ(M)/M of the common NTK part (default γ = M: weight 1).
    Computed in float64.
    """
    network = network or Network.mlp(1)
    x1 = np.asarray(x1.detach().cpu() if isinstance(x1, torch.Tensor) else x1, dtype=np.float64)
    same_inputs = x2 is None
    x2 = x1 if same_inputs else np.asarray(x2.detach().cpu() if isinstance(x2, torch.Tensor) else x2,
                                           dtype=np.float64)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise DeepensError(f"inputs: expected two matrices (N, d) with the same d, got {x1.shape} and {x2.shape}")
    if not network.layers:
        raise DeepensError("network: expected at least one hidden layer")
    d = x1.shape[1]
    weight = 1.0
    if isinstance(gamma, str) and gamma.strip().upper() == "M":
        weight = 1.0
    else:
        m = check_int("members", members if members is not None else 1, minimum=1)
        weight = check_real("gamma", float(gamma), low=0.0, low_open=True) / m

    def dense(prev: np.ndarray, std: float, bias: float) -> np.ndarray:
        return std * std * prev + bias * bias

    duals: dict = {}

    def dual_of(layer: HiddenLayer) -> Dual:
        key = layer.activation if isinstance(layer.activation, str) else id(layer.activation)
        return duals.setdefault(key, dual_for(layer.activation))

    pairs = _Pairs(x1.shape[0], x2.shape[0],
                   packed=same_inputs and all(_closed_form(dual_of(lay), lay.v) for lay in network.layers))
    first = network.layers[0]
    inner = x1 @ x2.T / d
    if pairs.packed:
        inner = inner[pairs.rows, pairs.cols]
    s_same = dense(inner, first.weight_std, first.bias_std)
    s_cross = s_same.copy()
    q1 = dense(np.einsum("ij,ij->i", x1, x1) / d, first.weight_std, first.bias_std)
    q2 = q1 if same_inputs else dense(np.einsum("ij,ij->i", x2, x2) / d, first.weight_std, first.bias_std)
    t_same = s_same.copy()
    t_cross = s_cross.copy()
    t_ind = np.zeros_like(s_same)
    layers_out: list[dict] = []
    nexts = [(lay.weight_std, lay.bias_std) for lay in network.layers[1:]]
    nexts.append((network.readout_std, network.readout_bias_std))
    cross_is_same = True  # until a modulation separates the members, cross-member kernels equal same-member ones

    def record(index: int, where: str) -> None:
        layers_out.append({
            "layer": index,
            "nngp_same": pairs.summary(s_same),
            "nngp_cross": pairs.summary(s_cross),
            "ntk_same": pairs.summary(weight * t_same + t_ind),
            "ntk_cross": pairs.summary(weight * t_cross),
            "where": where,
        })

    for index, (layer, (w_std, b_std)) in enumerate(zip(network.layers, nexts, strict=True), start=1):
        dual = dual_of(layer)
        record(index, "pre-activation")
        v = layer.v
        if isinstance(v, Moments) and dual.name not in ("relu", "identity"):
            raise DeepensError(f"v: layer {index} needs v's distribution for activation {dual.name!r}")
        modulated = layer.u is not None or layer.v is not None
        u1, u2 = _moments(layer.u)
        p1, p2 = pairs.variances(q1, q2)
        phi_s, tdot_s, phiz_s = dual.same(p1, p2, s_same, v)
        diag1 = dual.same(q1, q1, q1, v)[0]
        diag2 = diag1 if same_inputs else dual.same(q2, q2, q2, v)[0]
        w2 = w_std * w_std
        new_same = dense(u2 * phi_s, w_std, b_std)
        t_ind = w2 * u2 * tdot_s * t_ind
        if layer.u is not None and layer.train_u:
            t_ind += w2 * phi_s
        if layer.v is not None and layer.train_v:
            t_ind += w2 * u2 * phiz_s
        if cross_is_same and not modulated:
            t_same = new_same + w2 * tdot_s * t_same
            s_same = s_cross = new_same
            t_cross = t_same
        else:
            phi_c, tdot_c = dual.cross(p1, p2, s_cross, v)
            new_cross = dense(u1 * u1 * phi_c, w_std, b_std)
            t_same = new_same + w2 * u2 * tdot_s * t_same
            t_cross = new_cross + w2 * u1 * u1 * tdot_c * t_cross
            s_same, s_cross = new_same, new_cross
            cross_is_same = False
        q1 = dense(u2 * np.asarray(diag1), w_std, b_std)
        q2 = q1 if same_inputs else dense(u2 * np.asarray(diag2), w_std, b_std)
    record(len(network.layers) + 1, "output")
    full = pairs.full
    return InfiniteWidthKernels(full(s_same), full(s_cross), full(t_same), full(t_ind), full(t_cross), weight,
                                layers_out)
