"""The one exception type of deepens, and small argument checks that raise it."""

from __future__ import annotations

import math
import re
from numbers import Integral, Real
from typing import Any


class DeepensError(ValueError):
    """Bad input: the message names the argument and what was expected.

    A subclass of :class:`ValueError`, so ``except ValueError`` also catches it. The CLI prints its
    message on one line and exits with status 2.
    """


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int, or raise a :class:`DeepensError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise DeepensError(f"{name}: expected an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise DeepensError(f"{name}: expected an integer >= {minimum}, got {value}")
    return value


def check_widths(name: str, widths: Any, *, allow_empty: bool = True) -> list[int]:
    """Hidden-layer widths as a list of ints >= 1 (a sequence, not a single int), or a :class:`DeepensError`."""
    from collections.abc import Sequence

    if isinstance(widths, (int, str)) or not isinstance(widths, Sequence) or (not allow_empty and len(widths) == 0):
        kind = "a sequence" if allow_empty else "a non-empty sequence"
        raise DeepensError(f"{name}: expected {kind} of hidden widths such as [128, 128], got {widths!r}")
    return [check_int(f"{name}[{i}]", w, minimum=1) for i, w in enumerate(widths)]


def check_real(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite float within the given bounds, or raise a :class:`DeepensError`."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise DeepensError(f"{name}: expected a finite number, got {value!r}")
    value = float(value)
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise DeepensError(f"{name}: expected a number in {interval}, got {value:g}")
    return value


def all_finite(x: Any) -> bool:
    """Whether a tensor holds no NaN or infinity: its sum (one fast reduction; NaN and ±inf propagate through it)
    is finite, or — only when that sum overflowed or was poisoned — the exact element-wise test says so."""
    return bool(x.sum().isfinite()) or bool(x.isfinite().all())


def check_choice(name: str, value: Any, choices: tuple[str, ...] | list[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a :class:`DeepensError`."""
    if value not in choices:
        raise DeepensError(f"{name}: expected one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def parse_memory(value: int | float | str) -> int:
    """A memory budget in bytes from a number or a text such as ``"512MiB"``, ``"8GiB"``, ``"2GB"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0 or not math.isfinite(value):
            raise DeepensError(f"memory: expected a positive number of bytes, got {value!r}")
        return int(value)
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?i?B)?\s*", str(value), flags=re.IGNORECASE)
    if not match:
        raise DeepensError(f"memory: expected bytes or a size such as '512MiB' or '8GiB', got {value!r}")
    unit = (match.group(2) or "B").upper()
    power = "BKMGT".index(unit[0])
    base = 1024 if "I" in unit else 1000
    return parse_memory(float(match.group(1)) * base**power)
