"""Last-layer-dropout (LLD) ensembles: frozen modulations on the readout's input features only."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import DeepensError
from ..layers.distributions import Distribution, Normal, parse_distribution
from ..layers.members import ModulatedReadout, SharedBatchNorm
from .base import Ensemble
from .graph import trace

__all__ = ["LastLayerDropout"]


class LastLayerDropout(Ensemble):
    """LLD ensemble (EE App. D.4): f_α(x) = Σ_i φ_i(x) u_αi c_i + b with frozen masks u_α (Eq. 64).

    Everything up to the readout (the features φ) is shared and computed once for all members; the M
    heads cost one extra GEMM of M·B × N × C in training. ``predict_logits_mean`` is the single pass
    with the averaged mask ū = (1/M) Σ_α u_α (Eq. 65), exactly the mean of the members' outputs.
    ``mask`` defaults to N(0, 1) (centred: the independent regime); ``ShiftedNormal(p)`` moves it
    towards the collective regime. Training uses the per-member losses scaled by γ(M)/M (Eq. 66),
    which the trainer applies to the shared parameters. All parameters are shared; a batch norm below the
    readout (:class:`~deepens.layers.members.SharedBatchNorm`) is the network's own on a shared batch and
    normalises each member with its own statistics when the members get their own batches.
    """

    kind = "lld"

    def __init__(
        self,
        net: nn.Module,
        members: int,
        mask: Distribution | str = Normal(0.0, 1.0),  # noqa: B008 - immutable
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__(members)
        traced = trace(net, allow_other_parameters=True, builder="LastLayerDropout")
        readout = traced.sites[-1]
        if readout.is_conv:
            raise DeepensError(
                f"net: LastLayerDropout needs a dense readout as the last parameter layer, found "
                f"{type(readout.module).__name__} {readout.target!r}"
            )
        self.mask = parse_distribution(mask)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.seed = int(seed)
        gen = torch.Generator().manual_seed(self.seed)
        values = self.mask.sample((self.members, readout.in_features), generator=gen, dtype=readout.module.weight.dtype)
        traced.replace_module(readout.target, ModulatedReadout(readout.module, values, self.ctx))
        for _node, target, norm in traced.norms:  # members' own batches: each member's own statistics
            traced.replace_module(target, SharedBatchNorm(norm, self.ctx))
        self.net = traced.finish()
        self.sample_shape = traced.sample_shape
        self._readout = readout.target

    @property
    def head(self) -> ModulatedReadout:
        return self.net.get_submodule(self._readout)

    def _is_individual(self, name: str) -> bool:
        return False

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def predict_logits_mean(self, x: torch.Tensor, per_member: bool | None = None) -> torch.Tensor:
        """Mean member output in one pass with the averaged mask (EE Eq. 65)."""
        per_member = self._check_input(x, per_member)
        if per_member:
            return self(x, per_member=True).mean(0)
        self.ctx.mode = "mean"
        try:
            return self.net(x)
        finally:
            self.ctx.mode = "members"
