"""numpy's linear algebra on one thread, for the small matrix products of the methods (11, 14).

The matrices of the bundled model are small (256 to 846 columns). For such products OpenBLAS's
worker threads mostly wait for each other, and on a shared 2-core machine with other work on it
they made GPTQ 7-10× slower (a 256 × 768 matrix: 2.2-3.3 s against 0.34 s on one thread) and
notebook 14's LoRA training 12× slower (403 s of wall time against 33 s). ``one_blas_thread()``
sets numpy's bundled OpenBLAS (the PyPI wheels ship scipy-openblas) to one thread inside a
``with`` block and restores the count after; with any other BLAS it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from pathlib import Path

import numpy as np


@functools.cache
def _openblas():
    """numpy's own OpenBLAS and its get/set thread-count calls, or None (another BLAS: left alone)."""
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("*openblas*")) if libs.is_dir() else []:
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        for prefix, suffix in [
            ("scipy_openblas", "64_"),
            ("scipy_openblas", ""),
            ("openblas", "64_"),
            ("openblas", ""),
        ]:
            get, put = f"{prefix}_get_num_threads{suffix}", f"{prefix}_set_num_threads{suffix}"
            if hasattr(lib, get) and hasattr(lib, put):
                return getattr(lib, get), getattr(lib, put)
    return None


@contextlib.contextmanager
def one_blas_thread():
    """Run numpy's matrix products on one thread inside the block; the thread count is restored after."""
    calls = _openblas()
    if calls is None:
        yield
        return
    get, put = calls
    before = get()
    put(1)
    try:
        yield
    finally:
        put(before)
