"""glibc ``malloc`` settings for PAIR-X's allocation pattern.

An explanation allocates and frees thousands of tensors of 0.1 to 200 MB (activations, the
rules' saved factors, the pixel maps' cone windows). With glibc's defaults a freed block above
the *mmap threshold* goes back to the kernel at once, and the next tensor of that size faults in
fresh zeroed pages; the threshold only rises as such blocks are freed, so a fresh process (every
``pairx explain``) pays for most of its memory several times over, and the heap fragments.
:func:`tune_allocator` fixes the threshold at 256 MB and keeps up to 1 GB of free memory at the
top of the heap, so freed tensor memory is reused. Measured on the MiewID-sized case
(``docs/speed.md``): a lower peak RSS and a faster first explanation in a fresh process.

pairx's own processes call it at start (the ``pairx`` command, the review app's worker, Ray
workers); a program using the library calls :func:`tune_allocator` itself if it wants the same.
``PAIRX_MALLOC=system`` in the environment keeps the system's settings. Elsewhere than glibc
(macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["MMAP_THRESHOLD", "TOP_PAD", "TRIM_THRESHOLD", "release_free_memory", "tune_allocator"]

MMAP_THRESHOLD = 256 << 20
"""Blocks below this size come from the heap and are reused after ``free`` (bytes)."""
TRIM_THRESHOLD = 1 << 30
"""Free memory at the top of the heap kept in the process, up to this size (bytes)."""
TOP_PAD = 256 << 20
"""Extra memory requested from the kernel whenever the heap grows (bytes)."""

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's <malloc.h>
_applied: bool | None = None


def tune_allocator() -> bool:
    """Apply the settings above to this process's glibc ``malloc`` (once; later calls return the
    first answer).

    Returns
    -------
    bool
        ``True`` where they were applied; ``False`` with ``PAIRX_MALLOC=system``, or where the C
        library is not glibc.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("PAIRX_MALLOC", "").strip().lower() == "system":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  -- glibc only
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _applied = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_TOP_PAD, TOP_PAD)))
    return _applied


def release_free_memory() -> bool:
    """Give the pages of free heap memory back to the kernel (glibc's ``malloc_trim(0)``, which
    also releases whole free pages inside the heap, not only at its top).

    With :func:`tune_allocator`'s settings freed tensor memory stays in the process for reuse,
    up to about a gigabyte after a PAIR-X call on a MiewID-sized model. The review app's worker
    calls this whenever its job queue runs dry, so that an idle worker holds only what it uses.
    It costs about 0.2 s, and the next explanation faults the pages in again (called after
    every pair of a query it lowered the peak by about 0.3 GB but cost about 0.4 s per pair).
    A no-op, returning ``False``, with ``PAIRX_MALLOC=system``, before :func:`tune_allocator`
    has applied its settings, or elsewhere than glibc.
    """
    if not _applied:
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    trim = libc.malloc_trim
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True
