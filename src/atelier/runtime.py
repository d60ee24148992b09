"""Process-wide tuning applied once at start-up by the CLI and the server.

glibc's malloc returns large freed blocks to the kernel (``munmap``/``trim``) and PyTorch then
page-faults the same memory back in on the next layer: on these 2-core machines 20-40 % of a
style-transfer forward pass went to that. Keeping freed memory in the process (no mmap for big
blocks, no trimming) makes the same code 1.3-1.8x faster. The environment variables
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` do this only if set before the process starts;
``mallopt`` does the same from inside, so users get it without a wrapper script.

The price is that a long-lived process keeps the high-water mark of its largest job: an HD
commission's painting and upscale left a server at 7.5 GB. :func:`release_memory` hands the
freed pages back once a job is over (``malloc_trim``), so the speed is kept inside a job and
the memory is returned between them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_applied: dict[str, bool] = {}


def _mallopt_once(name: str, *settings: tuple[int, int]) -> bool:
    """Apply glibc ``mallopt`` settings once per process; True when every one took effect."""
    if name in _applied:
        return _applied[name]
    ok = False
    if sys.platform.startswith("linux") and os.environ.get("ATELIER_KEEP_MALLOC_DEFAULTS") != "1":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
            mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
            mallopt.restype = ctypes.c_int
            # mallopt returns 1 on success.
            ok = all(mallopt(param, value) == 1 for param, value in settings)
        except (OSError, AttributeError) as exc:  # musl, or no libc by that name
            log.debug("mallopt not available: %s", exc)
    _applied[name] = ok
    log.debug("%s tuning %s", name, "applied" if ok else "not applied")
    return ok


def tune_allocator() -> bool:
    """Ask glibc to keep freed memory instead of returning it to the kernel. Idempotent.

    Returns True when the setting took effect (glibc on Linux), False elsewhere. Set
    ``ATELIER_KEEP_MALLOC_DEFAULTS=1`` to measure without it.
    """
    return _mallopt_once("allocator", (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**30))


def one_malloc_arena() -> bool:
    """Make every thread of this process allocate from glibc's main arena. Idempotent.

    The server paints in threads (the instant model thread, job workers). By default glibc gives
    each thread an arena of its own, whose heaps are at most 64 MiB; a batch's feature maps are
    bigger, and with :func:`tune_allocator` keeping memory (no mmap for big blocks) those
    allocations bounce between arenas. Measured on these 2-core machines: the same MicroAST
    decode in a thread costs ~1.5x the CPU at batch 8 with per-thread arenas, and the instant API
    served ~2x fewer pictures per second. Must run before any thread allocates, i.e. first thing
    in ``atelier serve`` and ``atelier worker`` (MALLOC_ARENA_MAX=1 in the environment does the
    same). ``ATELIER_KEEP_MALLOC_DEFAULTS=1`` skips it.
    """
    return _mallopt_once("arena", (_M_ARENA_MAX, 1))


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_memory() -> bool:
    """Hand the heap's free pages back to the kernel now (glibc's ``malloc_trim(0)``, which
    also releases whole free pages inside the heap, not only at its top). True when glibc did
    release something.

    Meant for the end of a job: :func:`tune_allocator` keeps freed memory so that a painting
    does not fault the same pages in again on every layer, and after the painting nobody needs
    them. It costs a few milliseconds (a walk over the free lists); the next job faults its
    memory in once. Does nothing (False) off glibc. Runs even with ATELIER_KEEP_MALLOC_DEFAULTS
    (returning memory is what glibc's defaults would do anyway).
    """
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    released = bool(trim(0))
    log.debug("malloc_trim: %s", "memory released" if released else "nothing to release")
    return released


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for the engines (0 keeps PyTorch's choice: one per core)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
