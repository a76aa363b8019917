"""Files that are never half-written: atomic writes (temporary file + fsync + rename)."""

from .atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json"]
