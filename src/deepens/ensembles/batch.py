"""BatchEnsembles and MC-dropout ensembles: members share one network and differ by modulations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import DeepensError, check_int
from ..layers.distributions import Distribution, Normal, parse_distribution
from ..layers.members import Modulation, StackedBatchNorm, Tile
from ..layers.recompute import lean_active
from .base import Ensemble
from .fused import lean_graph
from .graph import trace

__all__ = ["BatchEnsemble", "MCDropout", "ModulationSpec"]

ModulationSpec = Distribution | str | None | Mapping[int, Distribution | str | None] | Sequence


def _per_layer(name: str, spec: ModulationSpec, hidden: int) -> list[Distribution | None]:
    """Resolve a modulation spec into one distribution (or None) per hidden layer."""
    if spec is None:
        return [None] * hidden
    if isinstance(spec, (Distribution, str)):
        dist = parse_distribution(spec)
        return [dist] * hidden
    if isinstance(spec, Mapping):
        out: list[Distribution | None] = [None] * hidden
        for key, value in spec.items():
            index = check_int(f"{name} (layer index)", key)
            if not -hidden <= index < hidden:
                raise DeepensError(
                    f"{name}: layer index {index} out of range; the network has {hidden} hidden layer(s) "
                    f"(indices 0..{hidden - 1}, or negative from the end)"
                )
            out[index % hidden] = None if value is None else parse_distribution(value)
        return out
    if isinstance(spec, Sequence):
        if len(spec) != hidden:
            raise DeepensError(
                f"{name}: expected one entry per hidden layer ({hidden}), got {len(spec)}"
            )
        return [None if v is None else parse_distribution(v) for v in spec]
    raise DeepensError(
        f"{name}: expected a Distribution, a spec string, None, a {{layer: distribution}} mapping or a "
        f"list per hidden layer; got {type(spec).__name__}"
    )


def _trainable(trainable: bool | Mapping[str, bool]) -> dict[str, bool]:
    keys = ("u", "v", "input", "output")
    if isinstance(trainable, bool):
        return dict.fromkeys(keys, trainable)
    if isinstance(trainable, Mapping):
        unknown = set(trainable) - set(keys)
        if unknown:
            raise DeepensError(f"trainable: unknown keys {sorted(unknown)}; expected some of {keys}")
        out = dict.fromkeys(keys, True)
        out.update({k: bool(v) for k, v in trainable.items()})
        return out
    raise DeepensError(f"trainable: expected a bool or a mapping such as {{'u': True, 'v': False}}, got {trainable!r}")


def _edge(spec: bool | Distribution | str, fallback: Distribution | None) -> Distribution | None:
    if spec is False or spec is None:
        return None
    if spec is True:
        return fallback if fallback is not None else Normal(0.0, 1.0)
    return parse_distribution(spec)


class BatchEnsemble(Ensemble):
    """Embedded ensemble with shared weights and per-member modulations (EE Eq. 1).

    In member α, hidden layer l computes x_α = u_α ⊙ φ(v_α ⊙ z_α) with z_α = W x_α^{l-1} + b: the
    weights W, b of the reference network are shared by all members; the pre-activation modulation
    v and the post-activation modulation u are per member and per neuron (per channel for a
    convolution). ``u`` / ``v`` give their distributions: one for every hidden layer, None for none,
    a mapping ``{layer index: distribution}`` (e.g. ``{-1: Normal(0, 1)}`` for the last hidden layer
    only) or a list with one entry per hidden layer. ``trainable`` (a bool, or a mapping over
    ``"u", "v", "input", "output"``) makes modulations parameters or frozen buffers.

    ``modulate_input`` / ``modulate_output`` add the original BatchEnsemble's modulation of the first
    layer's inputs and of the last layer's outputs; both are off by default because they destabilise
    training (EE App. C, Fig. 6 left). ``True`` uses u's (resp. v's) distribution; a distribution
    may be given instead.

    The shared weights are copied from ``net`` as it is; modulations are drawn with ``seed``. The first
    layer the input reaches computes a shared batch only once when no input modulation is present.
    Frozen modulations may be redrawn at every forward with ``resample=True`` (MC dropout). Batch norms are per
    member (each member's statistics, running buffers and affine parameters, which are individual); a
    pre-activation modulation v goes after a layer's batch norm, right before its activation.
    """

    kind = "batch"
    _chunkable = True

    def __init__(
        self,
        net: nn.Module,
        members: int,
        u: ModulationSpec = Normal(0.0, 1.0),  # noqa: B008 - immutable
        v: ModulationSpec = Normal(0.0, 1.0),  # noqa: B008 - immutable
        *,
        trainable: bool | Mapping[str, bool] = True,
        modulate_input: bool | Distribution | str = False,
        modulate_output: bool | Distribution | str = False,
        resample: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(members)
        traced = trace(net, allow_other_parameters=True, builder=type(self).__name__)
        hidden = len(traced.sites) - 1
        u_layers = _per_layer("u", u, hidden)
        v_layers = _per_layer("v", v, hidden)
        train = _trainable(trainable)
        first_u = next((d for d in u_layers if d is not None), None)
        first_v = next((d for d in v_layers if d is not None), None)
        u_in = _edge(modulate_input, first_u)
        v_out = _edge(modulate_output, first_v)
        if hidden == 0 and u_in is None and v_out is None:
            raise DeepensError(
                f"net: {type(self).__name__} modulates hidden layers, and this network has none "
                "(add a hidden layer, or set modulate_input / modulate_output)"
            )
        if resample and any(train[k] for k in ("u", "v", "input", "output")):
            raise DeepensError("resample: modulations redrawn at every forward must be frozen (trainable=False)")
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)
        self.resample = bool(resample)
        dtype = traced.sites[0].module.weight.dtype

        def modulation(dist: Distribution, features: int, trainable_: bool, feature_dim: int) -> Modulation:
            values = dist.sample((self.members, features), generator=self._generator, dtype=dtype)
            sub_seed = int(torch.randint(0, 2**62, (1,), generator=self._generator).item())
            return Modulation(
                values,
                feature_dim=feature_dim,
                trainable=trainable_,
                distribution=dist,
                resample=self.resample,
                seed=sub_seed,
            )

        # The tile (shared batch → folded members) goes right after the entry layer when the input is
        # not modulated, so that layer computes once; otherwise on the input itself.
        anchors: dict = {}
        entry = traced.entry if u_in is None else None
        if entry is not None:
            anchors[entry.node] = traced.insert_after(entry.node, "tile", Tile(self.ctx))
        else:
            traced.insert_after(traced.placeholders[0], "tile", Tile(self.ctx))
        self.layout: list[tuple[str, int, str]] = []  # (name, layer, kind) for introspection
        for site, v_dist, u_dist in zip(traced.sites[:-1], v_layers, u_layers, strict=True):
            layer = site.index + 1
            if v_dist is not None:
                node = anchors.get(site.pre, site.pre)
                mod = modulation(v_dist, site.out_features, train["v"], site.feature_dim)
                traced.insert_after(node, f"modulations.v{layer}", mod)
                self.layout.append((f"v{layer}", layer, "pre-activation"))
            if u_dist is not None:
                node = anchors.get(site.post, site.post)
                mod = modulation(u_dist, site.out_features, train["u"], site.feature_dim)
                traced.insert_after(node, f"modulations.u{layer}", mod)
                self.layout.append((f"u{layer}", layer, "post-activation"))
        if u_in is not None:
            first = traced.sites[0]
            mod = modulation(u_in, first.in_features, train["input"], first.feature_dim)
            traced.insert_before_input(first, "modulations.u0", mod)
            self.layout.append(("u0", 0, "input"))
        if v_out is not None:
            last = traced.sites[-1]
            mod = modulation(v_out, last.out_features, train["output"], last.feature_dim)
            traced.insert_after(anchors.get(last.node, last.node), f"modulations.v{hidden + 1}", mod)
            self.layout.append((f"v{hidden + 1}", hidden + 1, "output"))
        self._norms = [target for _, target, _ in traced.norms]
        for target in self._norms:  # batch norm per member (its statistics, buffers and affine parameters)
            bn = traced.gm.get_submodule(target)
            traced.replace_module(target, StackedBatchNorm([bn] * self.members, self.ctx))
        self.net = traced.finish()
        self.sample_shape = traced.sample_shape
        self.hidden_layers = hidden
        self.layer_names = [site.target for site in traced.sites]

    def _is_individual(self, name: str) -> bool:
        return name.startswith("net.modulations.") or any(name.startswith(f"net.{t}.") for t in self._norms)

    def modulations(self) -> dict[str, Modulation]:
        """The modulation modules by name (``u1``, ``v1``, ..., ``u0`` input, ``v{L+1}`` output)."""
        container = getattr(self.net, "modulations", None)
        return {} if container is None else dict(container.named_children())

    def _chunks_pay(self, x: torch.Tensor) -> bool:
        """One member at a time once the folded input holds 2^17 numbers (M·B·C·H·W): the members share the
        weights, so one convolution over a small folded batch beats M small ones, while on a large one each member's
        activations stay in cache and the backward pass holds one member's temporaries (``benchmarks``, the 4-layer
        CNN on 3×16×16: 3–12 % slower one at a time at 24,576–98,304 numbers, 5–22 % faster from 147,456 on — M = 64
        batches of 8: 982 ms against 1257 ms — and the step peak of a deep ensemble instead of up to 2× it)."""
        return x.numel() * (self.members if self.ctx.shared else 1) >= 2**17

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        if lean_active():  # the lean graph: modulated ReLU chains of convolutions fused (deepens.ensembles.fused)
            cached = self.__dict__.get("_lean_net", False)
            if cached is False:
                cached = self.__dict__["_lean_net"] = lean_graph(self.net)
            if cached is not None:
                net = cached
        if not self.ctx.chunked:
            return net(x)
        # the members one at a time through the shared network as a one-member ensemble: each modulation and
        # per-member batch norm holds member α's row of its values, parameters and buffers (split once: one node per
        # tensor in the graph; batch-norm statistics updated in place through the rows); modulations redrawn at
        # every forward are drawn once for all members first
        slots = []
        for module in self.net.modules():
            if isinstance(module, (Modulation, StackedBatchNorm)):
                for holder in (module._parameters, module._buffers):
                    slots += [(value.split(1), holder, name) for name, value in holder.items()
                              if value is not None and name != "draws"]
        redrawn = []
        try:
            for mod in self.modulations().values():
                if mod.resample:
                    mod.redraw()
                    mod.resample = False
                    redrawn.append(mod)
            return self._run_members(net, x, slots)
        finally:
            for mod in redrawn:
                mod.resample = True


class MCDropout(BatchEnsemble):
    """MC-dropout ensemble (EE §3): frozen post-activation masks u, no v, only the shared weights train.

    ``mask`` is the mask distribution (default Bernoulli(0.8, scaled): dropout with rate 0.2; EE App.
    D.3 also studies centred Gaussian masks ``Normal(0, σ)``). ``layers`` restricts the masks to some
    hidden layers (indices, negative from the end; default: all). With ``resample=False`` each member
    keeps a fixed mask; with ``resample=True`` masks are drawn anew at every forward (classic MC
    dropout), reproducibly from ``seed``.
    """

    kind = "mc-dropout"

    def __init__(
        self,
        net: nn.Module,
        members: int,
        mask: Distribution | str = "bernoulli:0.8,scaled",
        *,
        resample: bool = False,
        layers: Sequence[int] | None = None,
        seed: int | None = None,
    ) -> None:
        dist = parse_distribution(mask)
        u: ModulationSpec = dist if layers is None else {int(i): dist for i in layers}
        if layers is not None and len(layers) == 0:
            raise DeepensError("layers: expected at least one hidden layer index, got an empty list")
        super().__init__(net, members, u=u, v=None, trainable=False, resample=resample, seed=seed)
        self.mask = dist
