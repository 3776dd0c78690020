"""Where the codecs' big temporaries live: on a cache line, and in memory kept from call to call.

Nothing here changes a byte that an encoder writes; it changes how long numpy waits for memory.

numpy takes every array from the C library's malloc. Two of glibc's defaults cost the codecs dearly:

- an array above a threshold (128 KiB at first) is a fresh ``mmap`` whose every 4 KiB page
  faults, and is zeroed, on first touch;
- freed memory at the top of the heap goes back to the system as soon as it exceeds a second
  threshold, so the next call's temporaries fault all over again.

glibc raises both thresholds by itself once it frees a large mmapped array (up to 32 MiB and
64 MiB), but only then. A process that quantizes a small model's tensors, and nothing else,
never gets there: measured on the bundled model (benchmarks/codecs.py, in a process timing only
Q6_K, Q3_K and Q4_1), Q6_K's encoder ran at 0.84x ggml's C and its decoder at 3.3x gguf-py's
numpy; with ``keep_freed_memory()``, 1.04x and 6.2x.

Used by ``kquant.formats.quantize`` / ``dequantize`` (``keep_freed_memory``), by the scale searches
(``empty_aligned``) and by the whole-file workers of ``kquant.quantize_file``.
"""

import ctypes

import numpy as np

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
_MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its dynamic threshold
_kept = 0  # the trim threshold set so far (0: glibc's defaults)


def libc_function(name: str):
    """A function of the C library this process runs on (glibc's, on Linux), or None where it has none."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def keep_freed_memory(nbytes: int = 64 << 20) -> None:
    """glibc: serve arrays below 32 MiB from the heap, and keep up to ``nbytes`` of it free for reuse.

    The default, 64 MiB, is the state glibc's own dynamic thresholds reach after it frees one 32 MiB
    array, set from the start: the heap hands back its free top only beyond 64 MiB. Only ever
    raised (a worker that keeps 1 GiB is not lowered by a later call). Elsewhere (macOS, musl)
    there is no such knob, and nothing is changed.
    """
    global _kept
    if nbytes <= _kept:
        return
    mallopt = libc_function("mallopt")
    if mallopt is None:
        _kept = nbytes  # nothing to set, and nothing to look up again
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, nbytes)
    _kept = nbytes


def empty_aligned(shape, dtype=np.float32) -> np.ndarray:
    """``np.empty`` starting on a 64-byte cache line.

    A large np.empty starts 16 bytes past one (glibc's chunk header), so half of numpy's 32-byte
    SIMD loads split two cache lines; the searches' hot arrays come from here instead.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + 64, dtype=np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + nbytes].view(dtype).reshape(shape)
