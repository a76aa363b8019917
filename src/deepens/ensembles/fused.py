"""The lean training graph of a BatchEnsemble: x = u ⊙ ReLU(v ⊙ z) (EE Eq. 1) of a convolution as one operation.

Plain autograd runs the three operations of a modulated convolutional layer apart and keeps their operands: z,
v ⊙ z (or its ReLU) and the modulated output, three activation-sized tensors where a deep ensemble's ReLU keeps
one. :class:`ModulatedReLU` keeps one: its output x — which the next layer keeps anyway — wherever it can (it
reads the ReLU's mask, h and z back from x), else z; it computes the backward in one working buffer (mask source →
masked by ∂x, batched dot products: ∂v → ⊙ u: ∂a → ⊙ v: ∂z), so a BatchEnsemble keeps and peaks what a deep
ensemble does. A chain whose output something changes in place is not fused.

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
    graph: the product, the ReLU, the product, each in the dtype type promotion gives it)."""
    out = z * _channel(v) if v is not None else z.clone()
    out.relu_()
    if u is not None:  # in place unless the product widens (autocast: a bfloat16 ReLU times float32 values)
        out = out.mul_(_channel(u)) if torch.result_type(out, u) == out.dtype else out * _channel(u)
    return out


def _nonzero(t: torch.Tensor) -> torch.Tensor:
    """``t`` with its zeros replaced by ones (a divisor whose zero entries divide zeros)."""
    return torch.where(t == 0, torch.ones((), dtype=t.dtype, device=t.device), t)


def _keeps_output(z: torch.Tensor, out: torch.Tensor, u: torch.Tensor | None) -> bool:
    """Whether :class:`ModulatedReLU` keeps its output x rather than its input z: unless x is wider than z (autocast
    promotes a bfloat16 z times float32 values: the next layer keeps its own cast of x, so x would be one more
    tensor), float16 (u ⊙ ReLU(a) underflows there, and the ReLU's mask with it), or a trained u has an exact zero
    (x hides ReLU(a) there, which ∂u needs)."""
    if out.dtype != z.dtype or out.dtype == torch.float16:
        return False
    return u is None or not u.requires_grad or bool((u != 0).all())


class ModulatedReLU(torch.autograd.Function):
    """x = u ⊙ ReLU(v ⊙ z) per member and channel on (M, B, C, S); v or u may be None.

    Saves one activation-sized tensor (and the (M, C) values u, v): its output x where it can (see
    :func:`_keeps_output`) — the tensor the next layer (a convolution, a pooling) keeps anyway, so the chain keeps
    nothing of its own, as a plain ReLU (which saves its output) does — else z. With h = ReLU(a), a = v ⊙ z and
    x = u ⊙ h, the backward reads from x: a > 0 exactly where sign(u) x > 0, ∂u = Σ g ⊙ h = (Σ g ⊙ x) / u, and
    wherever a > 0, z = x / (u v), so ∂v = Σ ∂a ⊙ z = (Σ 1[a > 0] g ⊙ x) / v per channel (zero where v = 0, as
    a = 0 there); from z: h = ReLU(v ⊙ z), ∂u = Σ g ⊙ h, ∂v = u Σ 1[a > 0] g ⊙ z. Then ∂a = 1[a > 0] ⊙ g ⊙ u and
    ∂z = ∂a ⊙ v, the plain graph's numbers bit for bit (the same products, masked alike); ∂u, ∂v are the same sums
    in another order (equal to 1e-12 in float64)."""

    @staticmethod
    def forward(ctx, z, v, u):
        out = _forward_value(z, v, u)
        ctx.keeps_output = _keeps_output(z, out, u)
        ctx.save_for_backward(out if ctx.keeps_output else z, v, u)
        return out

    @staticmethod
    def backward(ctx, g):
        s, v, u = ctx.saved_tensors  # s: the output x or the input z
        from_x = ctx.keeps_output
        need_z, need_v, need_u = ctx.needs_input_grad
        uc, vc = _channel(u), _channel(v)
        if torch.is_grad_enabled():  # create_graph=True: the same formulas out of place, differentiable again
            if from_x:
                h = s / _nonzero(uc) if u is not None else s  # x = 0 where u = 0
            else:
                h = torch.relu(s * vc if v is not None else s)
            grad_u = (g * h).sum((1, 3)) if u is not None and need_u else None
            grad_a = (g * uc if u is not None else g) * (h > 0)
            grad_v = None
            if v is not None and need_v:
                grad_v = (grad_a * h).sum((1, 3)) / _nonzero(v) if from_x else (grad_a * s).sum((1, 3))
            grad_z = grad_a * vc if v is not None else grad_a
            return (grad_z if need_z else None), grad_v, grad_u
        # one working buffer: a mask source (≥ 0, > 0 exactly where a > 0: sign(u) ⊙ x, or h = ReLU(v ⊙ z)),
        # masked in place by one fused ReLU backward when g has its shape and dtype (whatever its strides: a mean
        # pool's gradient is an expanded tensor; out of place under autocast's mixed dtypes) into 1[a > 0] ⊙ g,
        # then ⊙ u: ∂a, then ⊙ v: ∂z
        if from_x:
            work = s * uc.sign() if u is not None else s.clone()
        else:
            work = s * vc if v is not None else s.clone()
            work.relu_()
        grad_u = None
        if u is not None and need_u:
            grad_u = channel_dots(s, g, u.dtype) / u if from_x else channel_dots(work, g, u.dtype)
        if not (need_z or need_v):
            return None, None, grad_u
        if g.shape == work.shape and g.dtype == work.dtype:
            torch.ops.aten.threshold_backward.grad_input(g, work, 0, grad_input=work)
        else:
            work = torch.where(work > 0, g, 0)
        grad_v = None
        if v is not None and need_v:
            dots = channel_dots(work, s, v.dtype)  # Σ 1[a > 0] g ⊙ (x or z)
            grad_v = dots / _nonzero(v) if from_x else (dots * u if u is not None else dots)
        if u is not None:
            work.mul_(uc)
        grad_z = None
        if need_z:
            grad_z = work.mul_(vc) if v is not None else work
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
        # x is kept (by this chain and the next layer) unless z is cheaper to keep — a tiled shared first-layer
        # output, whose recipe holds the shared batch alone — or kept by the chain (deepens.layers.recompute weighs it)
        remember(out, _forward_value, z4, v, u)
        return out.reshape(z.shape)


#: Calls whose result is a view of their input (the torch.fx targets of methods and functions).
_VIEWS = {"view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "squeeze", "unsqueeze", "transpose",
          "permute", "expand", "expand_as", "narrow", "select", "split", "chunk", "unbind", "detach", "t", "mT",
          "movedim", "getitem", "contiguous"}


def _in_place(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Whether ``node`` may change its input in place (an ``inplace=True`` module or call, a torch method or function
    whose name ends in ``_``): a fused chain's output, which its backward reads, must not be handed to it."""
    if node.kwargs.get("inplace", False):
        return True
    if node.op == "call_module":
        return bool(getattr(gm.get_submodule(node.target), "inplace", False))
    if node.op == "call_method":
        return str(node.target).endswith("_")
    if node.op == "call_function":  # operator.and_ / or_ are out of place; fx records x += y as an addition
        return getattr(node.target, "__name__", "").endswith("_") and \
            getattr(node.target, "__module__", None) not in ("_operator", "operator")
    return False


def _is_view(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), (nn.Flatten, nn.Unflatten, nn.Identity))
    if node.op in ("call_method", "call_function"):
        return getattr(node.target, "__name__", str(node.target)) in _VIEWS
    return False


def _changed_in_place(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Whether something may change ``node``'s value in place: an in-place user of it or of a view of it."""
    stack, seen = list(node.users), set()
    while stack:
        user = stack.pop()
        if user in seen:
            continue
        seen.add(user)
        if _in_place(user, gm):
            return True
        if _is_view(user, gm):
            stack.extend(user.users)
    return False


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
        if _changed_in_place(u_node or node, gm):
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
