"""Lean training memory: activations that are cheap to recompute are not kept for the backward pass.

An embedded ensemble multiplies every hidden layer by per-member modulations (EE Eq. 1, x = u ⊙ φ(v ⊙ z)) and
moves its folded batch between member-major and batch-major layouts. Plain autograd keeps a copy of each
intermediate an operation needs for its gradient: the pre-activation z (for ∂v), the activation φ(v ⊙ z) (for ∂u
and for φ'), the modulated x (the next layer's input, for its weight gradient) and the re-laid-out copies, where
a single network keeps about one tensor per layer. Those copies are elementwise functions of each other, so one
of them is enough.

Inside :func:`lean` (a context the ensembles open around a training forward), a layer that produces such a
tensor declares how to recompute it with :func:`remember` (output, function, inputs). Every tensor autograd saves
goes through a saved-tensors hook: when it — or the tensor it is a view of — has a recipe whose inputs are kept
anyway (saved by another operation, a parameter, the input batch, or themselves recomputable), autograd keeps
the recipe instead of the tensor, and the backward pass recomputes the value, bit for bit the same (the same
operations on the same inputs, under the same autocast state). A recipe whose inputs are not kept otherwise is
taken only when they are smaller than the tensor (the shared first-layer output behind a :class:`Tile`).
Gradients are therefore identical to the plain ones; only what is held between forward and backward changes.

Activation modules are recomputed by calling them again, so only deterministic, out-of-place activations are
remembered (not ``inplace=True``). The hooks compose with an enclosing saved-tensors hook only when that hook
declares it (``pack.deepens_compose = True``, as the training-memory estimate does); under any other enclosing
hook (e.g. ``torch.utils.checkpoint``) and under ``torch.func`` transforms the forward runs plainly.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["lean", "remember", "lean_active", "lean_possible", "saved_bytes"]

_state = threading.local()


def _root(t: torch.Tensor) -> torch.Tensor:
    base = t._base
    return t if base is None else base


def _nbytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


def _autocast_state(device_type: str) -> tuple:
    try:
        return (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
    except (RuntimeError, TypeError):  # a device type without autocast
        return (False, None)


class _Recipe:
    """How to recompute the tensor ``ref()`` — a contiguous root tensor (not a view) — from ``inputs``: ``fn``
    returns a contiguous tensor with the same elements in the same order (possibly another shape)."""

    __slots__ = ("ref", "version", "fn", "inputs", "versions", "device_type", "autocast", "cache", "recent", "packed")

    def __init__(self, root: torch.Tensor, fn: Callable, inputs: tuple, recent: list) -> None:
        self.ref = weakref.ref(root)
        self.version = root._version
        self.fn = fn
        # _Input (weak) references until a saved tensor needs the recipe (a forward must not keep its inputs
        # alive); then the tensors, or _View objects of recomputable inputs
        self.inputs = inputs
        self.versions = tuple(i.ref()._version if isinstance(i, _Input) else i._version if isinstance(i, torch.Tensor)
                              else None for i in inputs)  # checked when recomputing
        self.device_type = root.device.type
        self.autocast = _autocast_state(self.device_type)
        self.cache: weakref.ref | None = None
        self.recent = recent  # shared by one forward's recipes; freed with them after the backward
        self.packed = False  # some saved tensor is a view of it: the backward will ask for it

    def flat(self, top: bool = True) -> torch.Tensor:
        """The recomputed elements of the root's storage, flat. The value the backward asked for last, and the
        intermediates computed for it that the backward will ask for too, are held until it asks for another
        value; other intermediates are freed at once."""
        graph = torch.is_grad_enabled()  # a backward with create_graph=True: recompute with history
        cached = self.cache() if self.cache is not None and not graph else None
        if cached is not None:
            if top:
                self.recent[:] = [cached]
            elif self.packed:
                self.recent.append(cached)
            return cached.reshape(-1)
        if top:
            self.recent.clear()
        args = []
        for item, version in zip(self.inputs, self.versions, strict=True):
            if isinstance(item, _Input):  # never taken: cannot happen for a recipe a saved tensor uses
                raise RuntimeError("deepens lean memory: a recipe's input was freed before the backward pass")
            if isinstance(item, _View):
                args.append(item.value(top=False))
                continue
            if version is not None and item._version != version:
                raise RuntimeError(
                    "deepens lean memory: a tensor needed to recompute an activation for the backward pass was "
                    "modified in place after the forward pass"
                )
            args.append(item)
        enabled, dtype = self.autocast
        with torch.set_grad_enabled(graph):
            if enabled or _autocast_state(self.device_type)[0]:
                with torch.autocast(self.device_type, dtype=dtype, enabled=enabled):
                    out = self.fn(*args)
            else:
                out = self.fn(*args)
        if graph:
            return out.reshape(-1)
        self.cache = weakref.ref(out)
        if top or self.packed:
            self.recent.append(out)
        return out.reshape(-1)


class _View:
    """A tensor given as a view (shape, strides, offset from the root's start) of a recomputed root."""

    __slots__ = ("recipe", "shape", "stride", "offset")

    def __init__(self, recipe: _Recipe, t: torch.Tensor, root: torch.Tensor) -> None:
        self.recipe = recipe
        self.shape, self.stride = tuple(t.shape), tuple(t.stride())
        self.offset = t.storage_offset() - root.storage_offset()

    def value(self, top: bool = True) -> torch.Tensor:
        return self.recipe.flat(top).as_strided(self.shape, self.stride, self.offset)


class _Input:
    """A recipe's tensor input before the recipe is taken: a weak reference, and how to recompute it when it has
    a recipe of its own (the tensor may be freed by then)."""

    __slots__ = ("ref", "view")

    def __init__(self, t: torch.Tensor, view: _View | None) -> None:
        self.ref = weakref.ref(t)
        self.view = view


class _Saved:
    """What autograd keeps for one saved tensor: the tensor itself, a recomputed view, or an enclosing hook's
    packed object."""

    __slots__ = ("tensor", "view", "outer", "version")

    def __init__(self, tensor: torch.Tensor | None = None, view: _View | None = None) -> None:
        self.tensor = tensor
        self.view = view
        self.outer: object = None
        self.version = tensor._version if isinstance(tensor, torch.Tensor) else None  # when autograd saved it

    def check(self) -> None:
        """Refuse a tensor kept as it is and changed in place since it was saved, as plain autograd refuses it (a
        saved-tensors hook bypasses autograd's own check). A recomputed one is recomputed from its recipe's inputs,
        the values autograd saved: its gradient is right even where plain autograd, which kept the changed tensor,
        refuses the backward (the tensor itself may be gone by then, so it cannot be checked)."""
        if isinstance(self.tensor, torch.Tensor) and self.tensor._version != self.version:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an inplace operation: a "
                f"tensor of shape {tuple(self.tensor.shape)} is at version {self.tensor._version}; expected version "
                f"{self.version} instead (deepens' lean forward)")


class _Lean:
    """The per-forward state: recipes by root tensor, plain holders by root, the kept storages."""

    def __init__(self, outer: tuple | None) -> None:
        self.recipes: dict[int, _Recipe] = {}
        self.holders: dict[int, list[_Saved]] = {}
        self.plain: list[_Saved] = []
        self.kept: set[int] = set()  # data pointers of storages autograd keeps plainly
        self.recent: list[torch.Tensor] = []
        self.outer = outer

    # -- deciding ---------------------------------------------------------------------------------------
    def recipe_of(self, t: torch.Tensor) -> tuple[_Recipe, torch.Tensor] | None:
        root = _root(t)
        recipe = self.recipes.get(id(root))
        if recipe is None or recipe.ref() is not root or root._version != recipe.version:
            return None
        return recipe, root

    def source(self, t: torch.Tensor, depth: int, commits: list) -> tuple[object, float]:
        """(what a recipe should hold for its input ``t``, the bytes holding it keeps alive beyond what is
        kept anyway)."""
        if t.grad_fn is None or t.untyped_storage().data_ptr() in self.kept:
            return t, 0  # a leaf (parameter, buffer, input batch) or a tensor autograd keeps anyway
        found = self.recipe_of(t) if depth < 64 else None
        if found is not None:
            local: list = []
            extra = self.extra(found[0], depth + 1, local)
            if extra < _nbytes(t):
                commits.extend(local)
                return _View(found[0], t, found[1]), extra
        return t, _nbytes(t)

    def extra(self, recipe: _Recipe, depth: int, commits: list) -> float:
        """Bytes a recipe's inputs would keep alive beyond what is kept anyway (infinite when one is gone); the
        resolved inputs (recomputable ones as views) are appended to ``commits``, applied only if it is taken."""
        total = 0.0
        resolved = []
        for item in recipe.inputs:
            if isinstance(item, _Input):
                tensor = item.ref()
                if tensor is None:  # gone since the forward passed it: recompute it too, if it has a recipe
                    if item.view is None:
                        return math.inf
                    local: list = []
                    extra = self.extra(item.view.recipe, depth + 1, local) if depth < 64 else math.inf
                    if extra == math.inf:
                        return math.inf
                    commits.extend(local)
                    resolved.append(item.view)
                    total += extra
                    continue
                item = tensor
            if not isinstance(item, torch.Tensor):  # a recomputable input already resolved, or a constant
                resolved.append(item)
                continue
            src, extra = self.source(item, depth, commits)
            resolved.append(src)
            total += extra
        commits.append((recipe, tuple(resolved)))
        return total

    def view(self, t: torch.Tensor) -> _View | None:
        found = self.recipe_of(t)
        if found is None:
            return None
        commits: list = []
        if self.extra(found[0], 0, commits) >= _nbytes(t):
            return None
        for recipe, inputs in commits:  # recipes hold their inputs only once a saved tensor needs them
            recipe.inputs = inputs
        found[0].packed = True
        return _View(found[0], t, found[1])

    # -- hooks ------------------------------------------------------------------------------------------
    def pack(self, t: torch.Tensor) -> _Saved:
        view = self.view(t) if isinstance(t, torch.Tensor) and t.grad_fn is not None else None
        if view is not None:
            saved = _Saved(view=view)
            if self.outer is not None:
                self.plain.append(saved)
            return saved
        saved = _Saved(t)
        if isinstance(t, torch.Tensor):
            self.kept.add(t.untyped_storage().data_ptr())
            if t.grad_fn is not None:
                self.holders.setdefault(id(_root(t)), []).append(saved)
        if self.outer is not None:
            self.plain.append(saved)
        return saved

    def unpack(self, saved: _Saved) -> torch.Tensor:
        saved.check()
        if saved.view is not None:
            return saved.view.value()
        self.recent.clear()  # the backward has moved on to a tensor that was kept: drop the recomputed ones
        if saved.tensor is not None:
            return saved.tensor
        return self.outer[1](saved.outer)

    def remember(self, out: torch.Tensor, fn: Callable, inputs: tuple, keep: bool = False) -> None:
        root = _root(out)
        if not (root.is_contiguous() and out.is_contiguous() and out.numel() == root.numel()):
            return
        if any(isinstance(i, torch.Tensor) and _root(i) is root for i in inputs):
            return  # computed in place
        held = []
        for i in inputs:
            if isinstance(i, torch.Tensor) and not keep:
                found = self.recipe_of(i) if i.grad_fn is not None else None
                held.append(_Input(i, _View(found[0], i, found[1]) if found is not None else None))
            else:
                held.append(i)
        recipe = _Recipe(root, fn, tuple(held), self.recent)
        self.recipes[id(root)] = recipe
        # tensors saved before their recipe was known (an activation saves its output before its hook runs)
        holders = self.holders.pop(id(root), [])
        views = [self.view(h.tensor) for h in holders]
        if holders and all(v is not None for v in views):
            for holder, view in zip(holders, views, strict=True):
                holder.tensor, holder.view = None, view
            self.kept.discard(root.untyped_storage().data_ptr())
        else:
            self.holders[id(root)] = holders

    def close(self) -> None:
        """Hand what stays plainly kept to the enclosing hook, now that every recipe is known."""
        if self.outer is not None:
            held: dict[int, torch.Tensor] = {}  # tensors recipes hold beyond what is kept: the enclosing hook sees
            stack = [s.view.recipe for s in self.plain if s.view is not None]  # them too (a memory count does)
            seen: set[int] = set()
            while stack:
                recipe = stack.pop()
                if id(recipe) in seen:
                    continue
                seen.add(id(recipe))
                for item in recipe.inputs:
                    if isinstance(item, _View):
                        stack.append(item.recipe)
                    elif isinstance(item, torch.Tensor) and item.grad_fn is not None and \
                            item.untyped_storage().data_ptr() not in self.kept:
                        held[item.untyped_storage().data_ptr()] = item
            for saved in self.plain:
                if saved.tensor is not None:
                    saved.outer = self.outer[0](saved.tensor)
                    saved.tensor = None
            for t in held.values():
                self.outer[0](t)
        self.recipes.clear()
        self.holders.clear()
        self.plain.clear()


def lean_active() -> bool:
    """Whether a :func:`lean` context is recording recipes on this thread."""
    return getattr(_state, "lean", None) is not None


def remember(out: torch.Tensor, fn: Callable, *inputs, keep: bool = False) -> torch.Tensor:
    """Declare that ``out == fn(*inputs)`` (deterministically, out of place) inside a :func:`lean` forward; a no-op
    outside one. Returns ``out``. The recipe holds its inputs weakly until a saved tensor needs it; ``keep=True``
    holds them from the start (for inputs much smaller than ``out``, which the forward frees at once)."""
    state = getattr(_state, "lean", None)
    if state is not None and isinstance(out, torch.Tensor):
        state.remember(out, fn, inputs, keep)
    return out


def lean_possible() -> bool:
    """A lean forward is possible here: gradients are recorded, no ``torch.func`` transform is active, and no
    saved-tensors hook is open unless it composes (``pack.deepens_compose``)."""
    if not torch.is_grad_enabled() or lean_active():
        return False
    if torch._C._are_functorch_transforms_active():
        return False
    top = torch._C._autograd._top_saved_tensors_default_hooks(False)
    return top is None or bool(getattr(top[0], "deepens_compose", False))


def _deterministic(module: nn.Module) -> bool:
    return not getattr(module, "inplace", False) and not isinstance(module, nn.RReLU)


@contextmanager
def lean(activations: Iterable[nn.Module] = ()):
    """Record recipes and keep them instead of recomputable tensors for the backward pass (see the module
    docstring). ``activations`` are modules whose outputs are recomputed by calling them on their input."""
    if not lean_possible():
        yield False
        return
    outer = torch._C._autograd._top_saved_tensors_default_hooks(False)
    state = _Lean(outer)

    def hook(module, inputs, output):
        if len(inputs) == 1 and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
            state.remember(output, module, (inputs[0],), False)

    handles = [m.register_forward_hook(hook) for m in activations if _deterministic(m)]
    _state.lean = state
    try:
        with torch.autograd.graph.saved_tensors_hooks(state.pack, state.unpack):
            yield True
    finally:
        _state.lean = None
        for h in handles:
            h.remove()
        state.close()


@contextmanager
def saved_bytes(exclude: Iterable[torch.Tensor] = ()):
    """Count the bytes autograd keeps for the backward pass of what runs inside: each storage once, none of the
    ``exclude`` tensors' (e.g. the parameters, counted elsewhere). Composes with :func:`lean`, so a lean forward
    is counted as it keeps its tensors. Yields a dict whose ``"bytes"`` grows as tensors are saved."""
    seen = {t.untyped_storage().data_ptr() for t in exclude}
    count = {"bytes": 0}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            count["bytes"] += storage.nbytes()
        return t

    pack.deepens_compose = True
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield count
