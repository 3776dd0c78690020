"""llama.cpp's own quantizers, called through ctypes: the oracle kquant is checked against.

Every "byte-exact" claim in this workbook means: the bytes equal what this module gets
back from ggml, the C library inside llama-cpp-python (pinned to 0.3.36). We call it
directly instead of trusting a re-implementation, so a test of kquant can only pass
if kquant agrees with the code that actually writes GGUF files.

    >>> import numpy as np
    >>> from kquant import reference
    >>> x = np.random.default_rng(0).standard_normal((4, 256), dtype=np.float32)
    >>> q = reference.quantize(x, "Q4_K")       # (4, 144) uint8, made by ggml's C code
    >>> y = reference.dequantize(q, "Q4_K")     # (4, 256) float32, decoded by ggml

The functions live in ``libggml-base`` (the part of ggml built without ``-march=native``,
so its float results do not depend on the CPU). There is no Python binding for them in
llama_cpp, so we bind the few symbols we need ourselves. Every call is one plain C call
on one thread; nothing here is parallel.

Importing this module never fails: the library is loaded on first use, and if it
cannot be found the call raises :class:`OracleUnavailable`.

Notebooks 01 and 03-05 compare their bytes with it.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import pathlib
import sys
from types import SimpleNamespace

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from kquant.errors import KQuantError
from kquant.formats import FORMATS, check_bytes, check_importance, check_weights, get_format
from kquant.llamacpp import INSTALL_HINT

__all__ = [
    "SUPPORTED",
    "library",
    "OracleUnavailable",
    "available",
    "dequantize",
    "fp16_to_fp32",
    "fp32_to_fp16",
    "library_path",
    "quantize",
    "quantize_iq4_nl",
]

# The ten formats kquant implements, and no others: get_format refuses every other type,
# which matters here because for a few (IQ2_XXS, IQ2_XS, IQ1_S) ggml *aborts the whole
# process* when no imatrix is given, and a crashed Jupyter kernel teaches nothing.
SUPPORTED = tuple(FORMATS)

_INSTALL_HINT = f"llama.cpp's library was not found: {INSTALL_HINT}"


class OracleUnavailable(KQuantError):
    """llama-cpp-python (and with it libggml-base) is not installed or cannot be loaded."""


# --- finding and loading the library ------------------------------------------------


def library_path() -> pathlib.Path:
    """Path of the ``libggml-base`` shared library shipped by llama-cpp-python."""
    for folder in _candidate_folders():
        # libggml-base.so, libggml-base.so.0, libggml-base.so.0.25.3 (Linux, the first two
        # are symlinks), libggml-base.dylib (macOS), ggml-base.dll (Windows): the shortest
        # name is the unversioned one the linker would pick.
        found = [p for p in folder.glob("*ggml-base*") if p.suffix in (".so", ".dylib", ".dll") or ".so." in p.name]
        if found:
            return min(found, key=lambda p: (len(p.name), p.name))
    raise OracleUnavailable(_INSTALL_HINT)


def _candidate_folders():
    # llama_cpp honours this override for its own libraries; so do we, to load the same copy.
    if os.environ.get("LLAMA_CPP_LIB_PATH"):
        yield pathlib.Path(os.environ["LLAMA_CPP_LIB_PATH"])
    # find_spec locates the package without importing it (importing llama_cpp loads
    # libllama and all backends, which takes a while and which we do not need).
    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):  # broken or half-imported installs count as missing
        return
    if spec is None:
        return
    for pkg in spec.submodule_search_locations or ():
        yield pathlib.Path(pkg) / "lib"
        yield pathlib.Path(pkg).parent / "lib"  # some wheels also put a copy here
    # Last resort: ask llama_cpp itself where it loaded its libraries from.
    try:
        import llama_cpp.llama_cpp as _llama

        yield pathlib.Path(_llama._base_path)
    except Exception:  # any failure just means "not found"
        return


def available() -> bool:
    """True if the oracle can be used here (llama-cpp-python installed and loadable)."""
    try:
        library()
    except OracleUnavailable:
        return False
    return True


# ggml.h: typedef void (*ggml_to_float_t)(const void * x, float * y, int64_t k);
_ToFloat = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class _TypeTraits(ctypes.Structure):
    # Mirrors `struct ggml_type_traits` in ggml/include/ggml.h of the vendored llama.cpp,
    # field for field. ctypes applies the same C alignment rules, so the offsets agree.
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", _ToFloat),
        ("from_float_ref", ctypes.c_void_p),  # unused here: we quantize via ggml_quantize_chunk
    ]


@functools.cache
def library() -> SimpleNamespace:
    """Load libggml-base once and declare the C signatures we call (from ggml.h)."""
    path = library_path()
    if sys.platform == "win32":  # let Windows find ggml-base.dll's sibling DLLs
        os.add_dll_directory(str(path.parent))
    try:
        dll = ctypes.CDLL(str(path))
    except OSError as exc:
        raise OracleUnavailable(f"{_INSTALL_HINT} ({path} could not be loaded: {exc})") from None

    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    # Without argtypes ctypes would pass Python ints as 32-bit C ints: wrong for int64_t.
    dll.ggml_quantize_chunk.argtypes = [ctypes.c_int, ptr, ptr, i64, i64, i64, ptr]
    dll.ggml_quantize_chunk.restype = ctypes.c_size_t
    dll.ggml_get_type_traits.argtypes = [ctypes.c_int]
    dll.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
    dll.ggml_fp32_to_fp16_row.argtypes = [ptr, ptr, i64]
    dll.ggml_fp32_to_fp16_row.restype = None
    dll.ggml_fp16_to_fp32_row.argtypes = [ptr, ptr, i64]
    dll.ggml_fp16_to_fp32_row.restype = None

    to_float = {}
    for t in SUPPORTED:
        tr = dll.ggml_get_type_traits(int(t)).contents
        # Cheap guard against a different ggml whose struct or enum has drifted: if the
        # layout were off, these fields would be garbage and to_float a wild pointer.
        # (ggml spells the names "q4_0", "q4_K": compare case-insensitively.)
        if (tr.type_name.decode().upper(), tr.blck_size, tr.type_size) != (t.name, *GGML_QUANT_SIZES[t]):
            raise OracleUnavailable(
                f"{path} disagrees with gguf about {t.name}'s block layout: pip install llama-cpp-python==0.3.36"
            )
        to_float[t] = tr.to_float
    return SimpleNamespace(dll=dll, path=path, to_float=to_float)


# --- the oracle ----------------------------------------------------------------------
# Bad input must raise before it reaches C (C has no exceptions): the checks are
# kquant.formats' own, so both sides accept exactly the same input.


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def quantize(x, qtype, imatrix=None) -> np.ndarray:
    """Quantize float rows with ggml's ``ggml_quantize_chunk``; returns the GGUF bytes.

    ``x`` is float16/32/64 of shape ``(..., n_per_row)``, converted to float32 first
    (llama-quantize also quantizes from float32). The result has shape ``(..., row_bytes)``, dtype uint8.
    ``imatrix`` is None or one non-negative importance per column (``n_per_row`` floats),
    as llama-quantize passes from an imatrix file; with None ggml runs its reference
    quantizer, with an imatrix its weighted search (Q8_0 ignores it).
    """
    fmt = get_format(qtype)
    x = check_weights(x, fmt)
    n_per_row = x.shape[-1]
    if imatrix is not None:
        imatrix = check_importance(imatrix, n_per_row)
    return _quantize_chunk(int(fmt.qtype), x, fmt.row_bytes(n_per_row), imatrix)


def _quantize_chunk(qtype: int, x: np.ndarray, row_bytes: int, imatrix=None) -> np.ndarray:
    """ggml_quantize_chunk on checked float32 rows x (..., n_per_row): (..., row_bytes) uint8."""
    n_per_row = x.shape[-1]
    out = np.empty((*x.shape[:-1], row_bytes), dtype=np.uint8)
    written = library().dll.ggml_quantize_chunk(
        qtype, _ptr(x), _ptr(out), 0, x.size // n_per_row, n_per_row, None if imatrix is None else _ptr(imatrix)
    )
    if written != out.nbytes:  # ggml asserts this itself; checking costs nothing
        raise KQuantError(f"ggml wrote {written} bytes, expected {out.nbytes}: report this as a bug")
    return out


def dequantize(q, qtype) -> np.ndarray:
    """Decode GGUF bytes with ggml's own ``dequantize_row_*`` (the type's ``to_float``).

    ``q`` is uint8 of shape ``(..., row_bytes)``; the result is float32 of shape
    ``(..., n_per_row)``. Blocks decode independently, so one call covers all rows.
    """
    fmt = get_format(qtype)
    q = check_bytes(q, fmt)
    out = np.empty((*q.shape[:-1], q.shape[-1] // fmt.type_size * fmt.block_size), dtype=np.float32)
    library().to_float[fmt.qtype](_ptr(q), _ptr(out), out.size)
    return out


def quantize_iq4_nl(x) -> np.ndarray:
    """IQ4_NL bytes from ggml (``quantize(x, "IQ4_NL")`` without an imatrix; kquant.formats.iq4_nl is the numpy one).

    IQ4_NL ("non-linear") keeps Q4_0's layout (blocks of 32, one fp16 scale, 4-bit
    indices: 4.5 bits per weight) but an index picks one of 16 unevenly spaced values,
    ``gguf.quants.IQ4_NL.kvalues``, instead of a level on an even grid. Decode the result
    with ``gguf.quants.dequantize(q, GGMLQuantizationType.IQ4_NL)``.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] % 32 or x.size == 0:
        raise KQuantError(f"IQ4_NL needs rows of a multiple of 32 weights; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise KQuantError("the weights contain NaN or inf: llama.cpp refuses such tensors")
    return _quantize_chunk(int(GGMLQuantizationType.IQ4_NL), x, x.shape[-1] // 32 * 18)


# ggml_fp*_row take int64_t n but loop with a C `int` in fp32_to_fp16_row, so we feed
# them at most 2**30 elements at a time.
_FP16_CHUNK = 1 << 30


def fp32_to_fp16(x) -> np.ndarray:
    """Round float32 to fp16 the way ggml stores every scale (``ggml_fp32_to_fp16_row``).

    Equals ``x.astype(np.float16)`` for every non-NaN float32 (round to nearest even).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    return _convert_rows(library().dll.ggml_fp32_to_fp16_row, x, np.float16)


def fp16_to_fp32(h) -> np.ndarray:
    """Widen fp16 (a float16 array, or its raw uint16 bits) to float32 with ggml's code."""
    h = np.asarray(h)
    if h.dtype not in (np.float16, np.uint16):
        raise KQuantError(f"h has dtype {h.dtype}: pass float16 values or their uint16 bit patterns")
    return _convert_rows(library().dll.ggml_fp16_to_fp32_row, np.ascontiguousarray(h), np.float32)


def _convert_rows(fn, src: np.ndarray, dtype) -> np.ndarray:
    out = np.empty(src.shape, dtype=dtype)
    flat_src, flat_dst = src.reshape(-1), out.reshape(-1)
    for i in range(0, flat_src.size, _FP16_CHUNK):
        fn(_ptr(flat_src[i:]), _ptr(flat_dst[i:]), min(_FP16_CHUNK, flat_src.size - i))
    return out
