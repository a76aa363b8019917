"""The lean training graph of a BatchEnsemble: x = u ⊙ ReLU(v ⊙ z) (EE Eq. 1) of a convolution as one operation.

Plain autograd runs the three operations of a modulated convolutional layer apart; its backward needs φ(v ⊙ z)
(recomputed in a lean forward), the incoming gradient and the gradient it produces, three activation-sized
tensors at once where a single ReLU needs two. :class:`ModulatedReLU` keeps z alone and computes the backward
in one working buffer — v ⊙ z → ReLU → ⊙ g, summed: ∂u → overwritten by ∂h = g ⊙ u → masked → ∂v (batched dot
products with z) → ⊙ v: ∂z — so a BatchEnsemble's training step peaks where a deep ensemble's does.

:func:`lean_graph` rewrites a copy of the ensemble's torch.fx graph, replacing each chain (v modulation →) ReLU
(→ u modulation) on channels by a :class:`FusedModulation` node that calls the same modules; the ensemble runs it
only inside lean forwards (:mod:`deepens.layers.recompute`), never under ``torch.func`` transforms, so the
kernels' and hooks' view of the network (the plain graph) is unchanged. Outputs are bit-for-bit the plain ones;
the modulation gradients are the same sums in another order.
"""

from __future__ import annotations

import math

import torch
from torch import fx, nn

from ..layers.members import Modulation, channel_dots
from ..layers.recompute import remember

__all__ = ["ModulatedReLU", "FusedModulation", "lean_graph"]


def _channel(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t[:, None, :, None]


def _forward_value(z: torch.Tensor, v: torch.Tensor | None, u: torch.Tensor | None) -> torch.Tensor:
    """u ⊙ ReLU(v ⊙ z) on (M, B, C, S) in one new buffer (the same operations, in the same order, as the plain
    graph: the product, the ReLU, the product)."""
    out = z * _channel(v) if v is not None else z.clone()
    out.relu_()
    if u is not None:
        out.mul_(_channel(u))
    return out


class ModulatedReLU(torch.autograd.Function):
    """x = u ⊙ ReLU(v ⊙ z) per member and channel on (M, B, C, S); v or u may be None. Saves z, v, u only."""

    @staticmethod
    def forward(ctx, z, v, u):
        ctx.save_for_backward(z, v, u)
        return _forward_value(z, v, u)

    @staticmethod
    def backward(ctx, g):
        z, v, u = ctx.saved_tensors
        need_z, need_v, need_u = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph=True: the same formulas out of place, differentiable again
            a = z * _channel(v) if v is not None else z
            h = torch.relu(a)
            grad_u = (g * h).sum((1, 3)) if u is not None and need_u else None
            grad_a = (g * _channel(u) if u is not None else g) * (a > 0)
            grad_v = (grad_a * z).sum((1, 3)) if v is not None and need_v else None
            grad_z = grad_a * _channel(v) if v is not None else grad_a
            return (grad_z if need_z else None), grad_v, grad_u
        work = z * _channel(v) if v is not None else z.clone()  # the pre-activation a = v ⊙ z
        # g in (M, B, C, S) layout and dtype: h = ReLU(a) stays in the buffer (h > 0 exactly where a > 0), ∂u is
        # a batched dot product with g and ∂a one fused ReLU backward in place; otherwise (expanded gradients of a
        # mean pool, autocast's mixed dtypes) the same values through a boolean mask
        fast = g.is_contiguous() and g.shape == work.shape and g.dtype == work.dtype
        dead = None if fast else work <= 0  # where the ReLU is flat
        work.relu_()
        grad_u = None
        if u is not None and need_u:
            if fast:
                grad_u = channel_dots(work, g, u.dtype)
            else:
                work.mul_(g)  # h ⊙ g in place: whatever g's layout (pooling gives expanded gradients)
                grad_u = work.sum((1, 3)).to(u.dtype)
        if not (need_z or need_v):
            return None, None, grad_u
        if fast:  # ∂a = 1[h > 0] ⊙ g ⊙ u
            torch.ops.aten.threshold_backward.grad_input(g, work, 0, grad_input=work)
            if u is not None:
                work.mul_(_channel(u))
        else:
            # ∂h = g ⊙ u, written over the working buffer when the dtypes allow (autocast may mix them)
            if u is not None and work.dtype == torch.result_type(g, u):
                torch.mul(g, _channel(u), out=work)
            elif u is not None:
                work = g * _channel(u)
            elif work.dtype == g.dtype:
                work.copy_(g)
            else:
                work = g.clone()
            work.masked_fill_(dead, 0.0)  # ∂a (in place: a float copy of the mask would cost a whole buffer)
        grad_v = channel_dots(work, z, v.dtype) if v is not None and need_v else None
        grad_z = None
        if need_z:
            grad_z = work.mul_(_channel(v)) if v is not None else work
        return grad_z, grad_v, grad_u


class FusedModulation(nn.Module):
    """One (v modulation →) ReLU (→ u modulation) chain of a BatchEnsemble as :class:`ModulatedReLU`; calls
    the same modulation modules (their values, their redraws) as the plain graph."""

    def __init__(self, v: Modulation | None, u: Modulation | None) -> None:
        super().__init__()
        self.v, self.u = v, u

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        values = []
        for mod in (self.v, self.u):
            if mod is not None and mod.resample:
                mod.redraw()
            values.append(None if mod is None else mod.values)
        v, u = values
        m, c = (v if v is not None else u).shape
        z4 = z.reshape(m, -1, c, math.prod(z.shape[2:]))
        out = ModulatedReLU.apply(z4, v, u)
        remember(out, _forward_value, z4, v, u)  # the next layer keeps z (saved here), not its input
        return out.reshape(z.shape)


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _single_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def lean_graph(gm: fx.GraphModule) -> fx.GraphModule | None:
    """A copy of ``gm`` (sharing its modules) whose channel-modulated ReLU chains are :class:`FusedModulation`
    nodes; None when there is none."""
    graph = fx.Graph()
    remap: dict[fx.Node, fx.Node] = {}
    out = graph.graph_copy(gm.graph, remap)
    graph.output(out)
    modules = {name: mod for name, mod in gm.named_modules() if name}
    fused = 0
    for node in list(graph.nodes):
        mod = _module(gm, node)
        if not isinstance(mod, nn.ReLU) or mod.inplace or node.op != "call_module":
            continue
        source = node.args[0]
        v_node = source if isinstance(source, fx.Node) and isinstance(_module(gm, source), Modulation) and \
            _single_user(source) is node else None
        nxt = _single_user(node)
        u_node = nxt if nxt is not None and isinstance(_module(gm, nxt), Modulation) else None
        chain = [n for n in (v_node, u_node) if n is not None]
        if not chain or any(_module(gm, n).feature_dim != 1 for n in chain):
            continue
        name = f"lean_fused_{fused}"
        fused += 1
        modules[name] = FusedModulation(_module(gm, v_node) if v_node else None,
                                        _module(gm, u_node) if u_node else None)
        first = v_node or node
        last = u_node or node
        with graph.inserting_after(last):
            new = graph.call_module(name, (first.args[0],))
        last.replace_all_uses_with(new)
        for dead in (u_node, node, v_node):
            if dead is not None:
                graph.erase_node(dead)
    if not fused:
        return None
    graph.lint()
    return fx.GraphModule(modules, graph, class_name=type(gm).__name__ + "Lean")
