"""CLI plumbing shared by every command: one-line errors (exit status 2), JSON output, tables."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["Parser", "print_json", "print_table", "split_ints"]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def print_json(obj: Any) -> None:
    from ..runs.rundir import jsonable

    json.dump(jsonable(obj), sys.stdout, indent=2)
    sys.stdout.write("\n")


def print_table(rows: list[dict], columns: list[tuple[str, str, str]], stream=None) -> None:
    """Print ``rows`` as an aligned table; ``columns`` are (key, header, format). Undefined values (None, NaN:
    the correlation of a single member) print as —."""
    stream = stream or sys.stdout
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        line = []
        for key, _, fmt in columns:
            value = row.get(key)
            undefined = value is None or (isinstance(value, float) and value != value)  # None or NaN (e.g. one member)
            line.append("—" if undefined else format(value, fmt) if fmt else str(value))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for r in cells:
        padded = (c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        stream.write("  ".join(padded) + "\n")


def split_ints(name: str, text: str) -> list[int]:
    from ..errors import DeepensError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DeepensError(f"{name}: expected comma-separated integers such as 128,128, got {text!r}") from None
    if not values:
        raise DeepensError(f"{name}: expected at least one integer, got {text!r}")
    return values
