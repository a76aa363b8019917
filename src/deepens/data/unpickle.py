"""A restricted unpickler that admits plain data only.

Pickles can run arbitrary code when loaded. CIFAR's official python files are pickles, so deepens
reads them through :func:`safe_load`, which admits dicts, lists, tuples, sets, strings, bytes,
numbers, booleans, None and numpy arrays (and numpy scalars / dtypes, which arrays need) — and
refuses every other global with a :class:`DeepensError`.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from ..errors import DeepensError

__all__ = ["safe_load", "safe_loads", "ALLOWED_GLOBALS"]

# (module, name) pairs a numpy array pickle needs; numpy 2 moved numpy.core to numpy._core.
ALLOWED_GLOBALS = {
    (mod, name)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {
    (mod, "_frombuffer") for mod in ("numpy.core.numeric", "numpy._core.numeric")  # protocol-5 arrays
} | {
    (mod, name)
    for mod in ("builtins", "__builtin__")  # protocol 2 names Python 2's module
    for name in ("set", "frozenset", "bytearray", "complex")
} | {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles of bytes written by Python 3 use it
}


class _PlainDataUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise DeepensError(
            f"{self._source}: refused to unpickle {module}.{name}; only plain data (dict, list, str, bytes, "
            "numbers, numpy arrays) is admitted"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise DeepensError(f"{self._source}: refused a pickle with persistent references")


def safe_loads(data: bytes, source: str = "pickle") -> Any:
    """Unpickle ``data`` admitting plain data only (see the module docstring)."""
    try:
        return _PlainDataUnpickler(io.BytesIO(data), source).load()
    except DeepensError:
        raise
    except Exception as exc:  # truncated or garbled files
        raise DeepensError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from None


def safe_load(path, source: str | None = None) -> Any:
    """Unpickle the file at ``path`` admitting plain data only."""
    with open(path, "rb") as fh:
        return safe_loads(fh.read(), source or str(path))
