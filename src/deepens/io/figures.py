"""PNG figures written atomically: matplotlib with the non-interactive Agg backend, imported on first use."""

from __future__ import annotations

import io
from pathlib import Path

from .atomic import atomic_write_bytes

__all__ = ["pyplot", "save_png"]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, *, dpi: int = 120, bbox_inches: str | None = "tight") -> Path:
    """Render ``fig`` to PNG in memory, close it, and write the file atomically (temp file + rename)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches=bbox_inches)
    pyplot().close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
