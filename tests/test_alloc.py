"""Where the codecs' temporaries live (kquant.formats.alloc): on a cache line, in memory kept for reuse."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kquant.formats.alloc import empty_aligned, libc_function
from kquant.formats.search import _workspace


@pytest.mark.parametrize("shape", [(1,), (3, 5), (16, 2048), (6, 16, 4096)])
def test_empty_aligned_starts_on_a_cache_line_with_the_shape_and_dtype_asked(shape):
    # A large np.empty starts 16 bytes past a cache line (glibc's chunk header): the searches'
    # arrays come from here so that numpy's SIMD loads do not split lines.
    for dtype in (np.float32, np.uint8, bool):
        a = empty_aligned(shape, dtype)
        assert a.ctypes.data % 64 == 0
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
        a[...] = 1  # the whole array is writable memory of its own
        assert a.sum() == np.prod(shape)


def test_the_searchs_workspace_arrays_each_start_on_a_cache_line():
    arrays = _workspace(((6, 16, 2048), np.float32), ((19, 2048), bool), ((3, 7), np.uint8), ((5,), np.float32))
    assert [a.ctypes.data % 64 for a in arrays] == [0, 0, 0, 0]


# A fresh process runs SETUP, then ten rounds of what a codec's chunk does: four 1 MiB temporaries
# alive at once, then freed. It prints the page faults of those ten rounds.
_FAULTS = """
import resource, numpy as np
{setup}
def chunk():
    temporaries = [np.ones(1 << 18, np.float32) for _ in range(4)]
chunk()  # the first round may fault in any case
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    chunk()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(setup: str) -> int:
    code = textwrap.dedent(_FAULTS).format(setup=setup)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(libc_function("mallopt") is None, reason="only glibc has mallopt's thresholds")
def test_quantize_and_dequantize_reuse_freed_memory_instead_of_faulting_in_fresh_pages():
    # glibc's default: the freed 4 MiB go back to the system, and each round faults (and zeroes)
    # its 1024 pages afresh.
    default = _faults("")
    # After kquant's first quantize (or dequantize) call, the same arrays reuse freed heap memory.
    q6_k = "import kquant\nfrom gguf import GGMLQuantizationType as T\nQ6_K = T.Q6_K\n"
    after_quantize = _faults(q6_k + "kquant.quantize(np.ones((1, 256), np.float32), Q6_K)")
    after_dequantize = _faults(q6_k + "kquant.dequantize(np.zeros((1, 210), np.uint8), Q6_K)")
    assert default > 5000, f"{default} faults: glibc did not map each array afresh, this test shows nothing"
    assert after_quantize < default / 10, (default, after_quantize)
    assert after_dequantize < default / 10, (default, after_dequantize)


def test_the_memory_kept_is_only_ever_raised():
    code = (
        "from kquant.formats import alloc\n"
        "alloc.keep_freed_memory(1 << 30); alloc.keep_freed_memory(); print(alloc._kept)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert int(out.stdout) == 1 << 30  # a worker's 1 GiB is not lowered by a later quantize call
