"""Keep freed memory in the process, so large CPU tensors are not faulted in afresh every update.

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and returns it to the kernel on ``free``; it also gives the top of the heap back once
more than the trim threshold is free there. A training update on CPU allocates and frees the
same large activations and gradients every time (a Dreamer update on 64x64 frames: about 0.9 GB
in blocks of 10-100 MB), so each one is faulted in page by page and zero-filled by the kernel
again: about 220,000 page faults and 0.5 s of system time per one-thread update of
``benchmarks/dreamer_update.py`` (12% of it), and 570,000 for TorchRL's losses.

:func:`retain_freed_memory` tells glibc to serve large blocks from the heap and never to trim
it, so a block freed in one update is reused by the next once the heap has grown to the loop's
peak (after one or two updates). The cost is resident memory: the process keeps that heap for
the rest of its life, and fragmentation makes it larger than the peak of live tensors (1.6 GB
against 1.05 GB for the benchmark's update). It is a process-wide setting of the C library, so
it is an application's choice: the ``wmrl dreamer`` command and ``benchmarks/dreamer_pixels.py``
make it on CPU; a library call never does. Elsewhere (macOS, musl) it does nothing and says so.

    >>> from wmrl.cpu_memory import malloc_is_tunable, retain_freed_memory
    >>> malloc_is_tunable() in (True, False)  # True on Linux with glibc
    True
    >>> # retain_freed_memory()  # once, at the start of a training script on CPU
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

__all__ = ["retain_freed_memory", "malloc_is_tunable"]

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# glibc's defaults, restored by retain_freed_memory(False)
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
# "never trim": the largest value mallopt takes (an int)
_NEVER_TRIM = 2**31 - 1


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def malloc_is_tunable() -> bool:
    """Whether this process's ``malloc`` is glibc's, which :func:`retain_freed_memory` tunes."""
    return _libc() is not None


def retain_freed_memory(enabled: bool = True) -> bool:
    """Serve large blocks from the heap and keep freed memory (``enabled``), or restore glibc's
    default values (``enabled=False``; glibc's dynamic mmap threshold, which a ``mallopt`` call
    switches off, stays off).

    Enabled: ``M_MMAP_MAX = 0`` (no block gets its own ``mmap``) and ``M_TRIM_THRESHOLD`` at its
    maximum (the heap is never given back), the settings ``MALLOC_MMAP_MAX_=0
    MALLOC_TRIM_THRESHOLD_=2147483647`` give from the environment. Blocks allocated before the
    call keep their ``mmap`` until freed.

    Returns:
        ``True`` if the setting was made, ``False`` where ``malloc`` is not glibc's (nothing is
        changed there).

    Raises:
        RuntimeError: glibc refused a parameter.
    """
    libc = _libc()
    if libc is None:
        return False
    if enabled:
        settings = [(_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM)]
    else:
        settings = [
            (_M_MMAP_MAX, _DEFAULT_MMAP_MAX),
            (_M_MMAP_THRESHOLD, _DEFAULT_MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD),
        ]
    for param, value in settings:
        if libc.mallopt(param, value) != 1:
            raise RuntimeError(f"mallopt({param}, {value}) failed")
    return True
