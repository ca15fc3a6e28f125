"""Give memory freed by finished chunks back to the system: :func:`release_freed_memory`.

A streamed split allocates and frees one chunk's buffers per chunk, on the
training thread and on the prefetch thread (:mod:`training.data.prefetch`).
glibc gives each thread its own heap (arena) and keeps freed blocks in it for
reuse, and its mmap threshold grows with the sizes freed, so chunk-sized numpy
buffers end up in the arenas: each arena then holds its own high-water mark,
and RSS grows with the number of threads that touched a chunk instead of
staying at one chunk's worth. ``malloc_trim(0)`` returns the free pages of every
arena; Arrow's own pool is released separately.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import pyarrow as pa


def _libc_trim():  # type: ignore[no-untyped-def]
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)  # glibc only


_TRIM = _libc_trim()


def release_freed_memory() -> None:
    """Release Arrow's unused buffers and glibc's free pages (a few ms)."""
    pa.default_memory_pool().release_unused()
    if _TRIM is not None:
        _TRIM(0)


__all__ = ["release_freed_memory"]
