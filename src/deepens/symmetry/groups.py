"""Symmetry groups: finite groups (elements 0..|G|−1) and the continuous rotation groups SO(2), SO(3).

A group knows its identity, composition ``compose(g, h)`` = g·h (h acts first), inverses, and either
all its elements (finite groups) or how to draw Haar-random ones (``sample``). The group itself is
abstract; how it acts on inputs and outputs is a representation (:mod:`deepens.symmetry.actions`).

* :class:`CyclicGroup` C_k — rotations of the plane by multiples of 2π/k (``raw(g)`` is the angle).
* :class:`MatrixGroup` — a finite group of orthogonal matrices, closed from generators:
  :func:`tetrahedral` (12 rotations), :func:`octahedral` (24), :func:`icosahedral` (60),
  :func:`axis_rotations` (C_k about an axis of R³). ``raw(g)`` is the 3 × 3 matrix.
* :class:`PermutationGroup` — permutations of n coordinates from generators, :func:`symmetric` S_n,
  :func:`cyclic_shifts`. ``raw(g)`` is the permutation as a tuple, g(i) = raw(g)[i].
* :class:`SO2`, :class:`SO3` — continuous rotation groups; their elements are the angle / the matrix
  itself, and ``sample`` draws from the Haar measure (SO(3) through ``scipy.spatial.transform``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Sequence

import numpy as np

from ..errors import DeepensError, check_int

__all__ = [
    "Group",
    "FiniteGroup",
    "CyclicGroup",
    "MatrixGroup",
    "PermutationGroup",
    "SO2",
    "SO3",
    "tetrahedral",
    "octahedral",
    "icosahedral",
    "axis_rotations",
    "ROTATION_GROUPS",
    "symmetric",
    "cyclic_shifts",
    "rotation_matrix",
]


class Group:
    """Abstract group: identity, composition, inverse; finite groups list their elements."""

    name: str = "group"
    order: int | None = None  # None for a continuous group

    @property
    def is_finite(self) -> bool:
        return self.order is not None

    def identity(self):
        raise NotImplementedError

    def compose(self, g, h):
        """g·h: apply h, then g."""
        raise NotImplementedError

    def inverse(self, g):
        raise NotImplementedError

    def raw(self, g):
        """The concrete transformation behind element ``g`` (angle, matrix, permutation)."""
        return g

    def elements(self) -> list:
        raise DeepensError(f"group: {self.name} is continuous; it has no list of elements (use sample)")

    def sample(self, n: int, seed: int | np.random.Generator | None = 0) -> list:
        """``n`` Haar-random elements (uniform over a finite group), reproducible from ``seed``."""
        n = check_int("n", n, minimum=0)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return [int(i) for i in rng.integers(0, self.order, size=n)]

    def __repr__(self) -> str:
        size = f"order {self.order}" if self.is_finite else "continuous"
        return f"{type(self).__name__}({self.name}, {size})"


class FiniteGroup(Group):
    """A finite group whose elements are the integers 0..|G|−1, with index 0 the identity.

    Built from raw elements (angles, matrices, permutations), a multiplication of raw elements and a
    hashable key for them; ``compose`` multiplies the raw elements and looks the product up.
    """

    def __init__(self, name: str, raw: Sequence, multiply: Callable, key: Callable[[object], Hashable]) -> None:
        if len(raw) == 0:
            raise DeepensError("raw: a group needs at least one element")
        self.name = name
        self._raw = list(raw)
        self._multiply = multiply
        self._key = key
        self._index = {key(r): i for i, r in enumerate(self._raw)}
        if len(self._index) != len(self._raw):
            raise DeepensError(f"raw: the elements of {name} are not distinct")
        self.order = len(self._raw)
        ident = key(multiply(self._raw[0], self._raw[0]))
        if ident != key(self._raw[0]):
            raise DeepensError(f"raw: element 0 of {name} must be the identity")
        self._inverse: list[int] | None = None

    def check(self, g) -> int:
        """``g`` as an int, or a DeepensError when it is not an element."""
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or not 0 <= int(g) < self.order:
            raise DeepensError(f"g: expected an element 0..{self.order - 1} of {self.name}, got {g!r}")
        return int(g)

    def identity(self) -> int:
        return 0

    def raw(self, g) -> object:
        return self._raw[self.check(g)]

    def lookup(self, raw) -> int:
        """The element whose raw form is ``raw``."""
        try:
            return self._index[self._key(raw)]
        except KeyError:
            raise DeepensError(f"raw: {raw!r} is not an element of {self.name}") from None

    def compose(self, g, h) -> int:
        return self.lookup(self._multiply(self._raw[self.check(g)], self._raw[self.check(h)]))

    def inverse(self, g) -> int:
        g = self.check(g)
        if self._inverse is None:
            inv = [0] * self.order
            for a in range(self.order):
                for b in range(self.order):
                    if self.compose(a, b) == 0:
                        inv[a] = b
                        break
            self._inverse = inv
        return self._inverse[g]

    def elements(self) -> list[int]:
        return list(range(self.order))

    def cayley_table(self) -> np.ndarray:
        """(|G|, |G|) table T[g, h] = g·h."""
        return np.array([[self.compose(g, h) for h in range(self.order)] for g in range(self.order)])


def _closure(generators: Sequence, multiply: Callable, key: Callable, identity, limit: int) -> list:
    """All products of the generators (breadth first), identity first; at most ``limit`` elements."""
    elements = [identity]
    seen = {key(identity)}
    frontier = [identity]
    while frontier:
        nxt = []
        for a in frontier:
            for s in generators:
                b = multiply(s, a)
                k = key(b)
                if k not in seen:
                    seen.add(k)
                    elements.append(b)
                    nxt.append(b)
                    if len(elements) > limit:
                        raise DeepensError(f"generators: they generate more than {limit} elements")
        frontier = nxt
    return elements


class CyclicGroup(FiniteGroup):
    """C_k: rotations of the plane by 2πr/k, r = 0..k−1 (element r; ``raw(r)`` is the angle)."""

    def __init__(self, k: int) -> None:
        self.k = check_int("k", k, minimum=1)
        angles = [2 * math.pi * r / self.k for r in range(self.k)]
        super().__init__(f"C{self.k}", angles, lambda a, b: (a + b) % (2 * math.pi),
                         lambda a: round(((a / (2 * math.pi)) * self.k) % self.k) % self.k)

    def compose(self, g, h) -> int:
        return (self.check(g) + self.check(h)) % self.k

    def inverse(self, g) -> int:
        return (-self.check(g)) % self.k


def _matrix_key(m: np.ndarray) -> tuple:
    return tuple(np.round(np.asarray(m, dtype=np.float64), 6).ravel() + 0.0)


class MatrixGroup(FiniteGroup):
    """A finite group of orthogonal d × d matrices, generated by ``generators`` (closure up to ``limit``)."""

    def __init__(self, name: str, generators: Sequence[np.ndarray], limit: int = 10_000) -> None:
        gens = [np.asarray(g, dtype=np.float64) for g in generators]
        if not gens or any(g.ndim != 2 or g.shape[0] != g.shape[1] or g.shape != gens[0].shape for g in gens):
            raise DeepensError("generators: expected square matrices of one size")
        for i, g in enumerate(gens):
            if not np.allclose(g @ g.T, np.eye(len(g)), atol=1e-9):
                raise DeepensError(f"generators[{i}]: expected an orthogonal matrix")
        eye = np.eye(gens[0].shape[0])
        raw = _closure(gens, np.matmul, _matrix_key, eye, limit)
        super().__init__(name, raw, np.matmul, _matrix_key)
        self.dim = eye.shape[0]

    def inverse(self, g) -> int:
        return self.lookup(self.raw(g).T)

    def matrices(self) -> np.ndarray:
        """All elements as an array (|G|, d, d)."""
        return np.stack(self._raw)


def rotation_matrix(axis: Sequence[float], angle: float) -> np.ndarray:
    """The rotation of R³ by ``angle`` about ``axis`` (right-hand rule), by Rodrigues' formula."""
    a = np.asarray(axis, dtype=np.float64)
    if a.shape != (3,) or not np.linalg.norm(a) > 0:
        raise DeepensError(f"axis: expected a non-zero 3-vector, got {axis!r}")
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def tetrahedral() -> MatrixGroup:
    """T ≅ A_4: the 12 rotations of a regular tetrahedron (3-fold about (1,1,1), 2-fold about z)."""
    return MatrixGroup("T", [rotation_matrix((1, 1, 1), 2 * math.pi / 3), rotation_matrix((0, 0, 1), math.pi)])


def octahedral() -> MatrixGroup:
    """O ≅ S_4: the 24 rotations of a cube (4-fold about z, 3-fold about (1,1,1))."""
    return MatrixGroup("O", [rotation_matrix((0, 0, 1), math.pi / 2), rotation_matrix((1, 1, 1), 2 * math.pi / 3)])


def icosahedral() -> MatrixGroup:
    """I ≅ A_5: the 60 rotations of a regular icosahedron (5-fold about (0, 1, φ), 3-fold about (1,1,1))."""
    phi = (1 + math.sqrt(5)) / 2
    return MatrixGroup("I", [rotation_matrix((0, 1, phi), 2 * math.pi / 5),
                             rotation_matrix((1, 1, 1), 2 * math.pi / 3)])


def axis_rotations(k: int, axis: Sequence[float] = (0, 0, 1)) -> MatrixGroup:
    """C_k acting on R³: rotations by 2πr/k about ``axis``."""
    k = check_int("k", k, minimum=1)
    return MatrixGroup(f"C{k}(axis)", [rotation_matrix(axis, 2 * math.pi / k)])


ROTATION_GROUPS: dict[str, Callable[[], MatrixGroup]] = {
    "c1": lambda: axis_rotations(1),
    "c2": lambda: axis_rotations(2),
    "c4": lambda: axis_rotations(4),
    "t": tetrahedral,
    "o": octahedral,
    "i": icosahedral,
}
"""Finite rotation groups of R³ by name: C_1, C_2, C_4 about the z axis, tetrahedral (12), octahedral (24),
icosahedral (60)."""


class PermutationGroup(FiniteGroup):
    """Permutations of ``n`` coordinates generated by ``generators`` (each a sequence with g(i) = g[i]).

    Composition is (g·h)(i) = g(h(i)). At most ``limit`` elements are enumerated.
    """

    def __init__(self, n: int, generators: Sequence[Sequence[int]], name: str | None = None,
                 limit: int = 50_000, *, elements: Sequence[tuple] | None = None) -> None:
        self.n = check_int("n", n, minimum=1)
        gens = []
        for i, g in enumerate(generators):
            t = tuple(int(v) for v in g)
            if sorted(t) != list(range(self.n)):
                raise DeepensError(f"generators[{i}]: expected a permutation of 0..{self.n - 1}, got {list(g)!r}")
            gens.append(t)

        def multiply(a: tuple, b: tuple) -> tuple:
            return tuple(a[i] for i in b)

        ident = tuple(range(self.n))
        raw = list(elements) if elements is not None else _closure(gens, multiply, tuple, ident, limit)
        super().__init__(name or f"Perm({self.n})", raw, multiply, tuple)

    def inverse(self, g) -> int:
        p = self.raw(g)
        inv = [0] * self.n
        for i, v in enumerate(p):
            inv[v] = i
        return self.lookup(tuple(inv))


def symmetric(n: int) -> PermutationGroup:
    """S_n, all n! permutations (n <= 8)."""
    n = check_int("n", n, minimum=1)
    if n > 8:
        raise DeepensError(f"n: S_n is enumerated only for n <= 8 ({n}! elements is too many); "
                           "use PermutationGroup with generators of a subgroup")
    return PermutationGroup(n, [], f"S{n}", elements=list(itertools.permutations(range(n))))


def cyclic_shifts(n: int) -> PermutationGroup:
    """The n cyclic shifts of n coordinates, i ↦ i + 1 mod n generating."""
    n = check_int("n", n, minimum=1)
    return PermutationGroup(n, [tuple((i + 1) % n for i in range(n))], f"Shift({n})")


class SO2(Group):
    """Rotations of the plane; an element is its angle in [0, 2π)."""

    name = "SO(2)"

    def identity(self) -> float:
        return 0.0

    def compose(self, g, h) -> float:
        return float((g + h) % (2 * math.pi))

    def inverse(self, g) -> float:
        return float((-g) % (2 * math.pi))

    def sample(self, n: int, seed: int | np.random.Generator | None = 0) -> list[float]:
        n = check_int("n", n, minimum=0)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return [float(a) for a in rng.uniform(0.0, 2 * math.pi, size=n)]


class SO3(Group):
    """Rotations of R³; an element is its 3 × 3 matrix (float64)."""

    name = "SO(3)"

    def identity(self) -> np.ndarray:
        return np.eye(3)

    def compose(self, g, h) -> np.ndarray:
        return np.asarray(g) @ np.asarray(h)

    def inverse(self, g) -> np.ndarray:
        return np.asarray(g).T

    def sample(self, n: int, seed: int | np.random.Generator | None = 0) -> list[np.ndarray]:
        """Haar-uniform rotations (``scipy.spatial.transform.Rotation.random``)."""
        from scipy.spatial.transform import Rotation

        n = check_int("n", n, minimum=0)
        if n == 0:
            return []
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return list(Rotation.random(n, random_state=rng).as_matrix())
