"""The block formats, one module each, and the two calls that dispatch to them.

Every format module has the same small surface, named after ggml's C code:

    QK                    weights per block (32, or QK_K = 256 for the K-quants)
    TYPE_SIZE             bytes per block (sizeof(block_q4_K) == 144, ...)
    encode(x)             (n_blocks, QK) float32 -> the unpacked fields (scales, levels, ...)
    encode_impl(x, w)     the same for whole rows weighted by an importance vector (ggml's _impl)
    pack(fields)          fields -> (n_blocks, TYPE_SIZE) uint8, the bytes ggml writes
    unpack(b), decode(f)  bytes -> fields -> (n_blocks, QK) float32
    dequantize_blocks(b)  (n_blocks, TYPE_SIZE) uint8 -> (n_blocks, QK) float32

``quantize`` below checks its input, flattens it into blocks, and in cache-sized chunks
calls ``encode``, checks that every fp16 scale fits (as llama.cpp validates rows), and
calls ``pack``; ``dequantize`` calls ``dequantize_blocks``. The steps are separate so the
notebooks can show each one.

Notebooks 03-05 and 15 use it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from kquant.errors import KQuantError
from kquant.formats.alloc import keep_freed_memory

# name -> module, in the order the workbook teaches them.
_MODULES = {
    "Q8_0": "q8_0",
    "Q4_0": "q4_0",
    "Q4_1": "q4_1",
    "Q5_0": "q5_0",
    "Q5_1": "q5_1",
    "Q2_K": "q2_k",
    "Q3_K": "q3_k",
    "Q4_K": "q4_k",
    "Q5_K": "q5_k",
    "Q6_K": "q6_k",
    "IQ4_NL": "iq4_nl",
}


@dataclass(frozen=True)
class Format:
    """One block format: its ggml type, geometry and the module that codes it."""

    qtype: GGMLQuantizationType
    module: ModuleType

    @property
    def name(self) -> str:
        return self.qtype.name

    @property
    def block_size(self) -> int:
        return self.module.QK

    @property
    def type_size(self) -> int:
        return self.module.TYPE_SIZE

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.type_size / self.block_size

    def row_bytes(self, n_per_row: int) -> int:
        return n_per_row // self.block_size * self.type_size


def _load() -> dict[GGMLQuantizationType, Format]:
    formats = {}
    for name, modname in _MODULES.items():
        qtype = GGMLQuantizationType[name]
        module = importlib.import_module(f"{__name__}.{modname}")
        # The geometry must be llama.cpp's own (gguf-py's table mirrors ggml's type traits).
        assert (module.QK, module.TYPE_SIZE) == GGML_QUANT_SIZES[qtype], name
        formats[qtype] = Format(qtype, module)
    return formats


FORMATS: dict[GGMLQuantizationType, Format] = _load()


def ggml_type(t) -> GGMLQuantizationType:
    """The one parser of type names: a GGMLQuantizationType from itself, its id or its name ("q4_k")."""
    try:
        return GGMLQuantizationType[t.strip().upper()] if isinstance(t, str) else GGMLQuantizationType(t)
    except (KeyError, ValueError):
        raise KQuantError(f"unknown ggml type {t!r}: use a type name such as Q8_0, Q4_K or F16") from None


def get_format(qtype) -> Format:
    """The Format for a ``GGMLQuantizationType``, its integer id, or its name ("q4_k" works)."""
    if isinstance(qtype, Format):
        return qtype
    try:
        qtype = ggml_type(qtype)
    except KQuantError:
        known = ", ".join(f.name for f in FORMATS.values())
        raise KQuantError(f"unknown quantization type {qtype!r}: use one of {known}") from None
    if qtype not in FORMATS:
        known = ", ".join(f.name for f in FORMATS.values())
        raise KQuantError(f"kquant does not encode {qtype.name}: use one of {known}")
    return FORMATS[qtype]


# Weights handed to a format module at a time: big enough that numpy's per-call
# overhead vanishes, small enough that a chunk's temporaries stay in cache.
# (Measured: the K-quant searches run ~40 numpy calls per candidate scale, ~1 us each
# whatever the size, so 2**16 left them 15 % slower than 2**18, which also takes every
# tensor of a small model in one call; 2**19 falls out of the 1 MB L2. Decoders, a few
# memory-bound passes, like 2**18 too. A format module may set its own ENCODE_CHUNK.)
_ENCODE_CHUNK = 1 << 18
_DECODE_CHUNK = 1 << 19


def quantize(x, qtype, imatrix=None) -> np.ndarray:
    """Encode a float array exactly as ggml's ``ggml_quantize_chunk`` does.

    ``x`` is float16/32/64 with a last axis that is a multiple of the block size.
    Returns uint8 of shape ``(*x.shape[:-1], row_bytes)``, like gguf-py's ``quantize``.

    ``imatrix`` (optional): one importance per column, shape ``(x.shape[-1],)``, as
    llama.cpp's imatrix files hold (mean squared activations of each input). With it,
    the scale searches are weighted by how much each weight matters (ggml's
    ``quantize_row_*_impl``); Q8_0 ignores it, as ggml does.
    """
    fmt = get_format(qtype)
    keep_freed_memory()  # the chunks' temporaries reuse memory from call to call (see formats/alloc.py)
    # NaN/Inf are looked for chunk by chunk below, where the chunk is about to be read anyway
    # (a separate pass over the whole input reads it cold from memory: ~10 % of a Q4_0 encode).
    x = check_weights(x, fmt, finite=False)
    n_per_row = x.shape[-1]
    # Formats whose scales turn NaN or inf when a weight is (NONFINITE_REACHES_SCALES) skip the
    # search: _check_scales, which reads every scale anyway, sends such a chunk to check_weights.
    look_for_nonfinite = True
    if imatrix is None:
        blocks = x.reshape(-1, fmt.block_size)
        step = getattr(fmt.module, "ENCODE_CHUNK", _ENCODE_CHUNK) // fmt.block_size  # blocks per chunk
        encode = fmt.module.encode
        look_for_nonfinite = not getattr(fmt.module, "NONFINITE_REACHES_SCALES", False)
    else:
        blocks = x.reshape(-1, n_per_row)  # the imatrix paths work row by row
        imatrix = check_importance(imatrix, n_per_row)
        step = max(1, _ENCODE_CHUNK // n_per_row)  # rows per chunk

        def encode(rows):
            return fmt.module.encode_impl(rows, imatrix)

    per_item = fmt.type_size * (blocks.shape[1] // fmt.block_size)
    chunks = range(0, blocks.shape[0], step)
    # One chunk (every tensor of a small model): pack's own array is the output, not copied into another.
    out = np.empty((blocks.shape[0], per_item), dtype=np.uint8) if len(chunks) > 1 else None
    for i in chunks:
        if look_for_nonfinite and not np.isfinite(blocks[i : i + step]).all():
            check_weights(x, fmt)  # raises, naming the first bad weight of the whole input
        fields = encode(blocks[i : i + step])
        _check_scales(fields, fmt, first_block=i * per_item // fmt.type_size, weights=(x, fmt))
        packed = fmt.module.pack(fields).reshape(-1, per_item)
        if out is None:
            out = packed
        else:
            out[i : i + step] = packed
    return out.reshape(*x.shape[:-1], fmt.row_bytes(n_per_row))


def check_importance(imatrix, n_per_row: int) -> np.ndarray:
    """Check an importance vector: one finite, non-negative float per column."""
    qw = np.asarray(imatrix)
    if qw.dtype.kind not in "fiu":
        raise KQuantError(f"imatrix has dtype {qw.dtype}: pass one float per column, e.g. np.float32")
    if qw.shape != (n_per_row,):
        raise KQuantError(
            f"imatrix has shape {qw.shape}, the rows have {n_per_row} columns: pass one importance per column"
        )
    with np.errstate(over="ignore"):
        qw = np.ascontiguousarray(qw, dtype=np.float32)
    if not np.isfinite(qw).all() or (qw < 0).any():
        raise KQuantError(
            "imatrix must be finite and >= 0 (it holds mean squared activations): llama.cpp refuses it otherwise"
        )
    return qw


def _check_scales(fields, fmt: Format, first_block: int, weights=None) -> None:
    """Refuse blocks whose fp16 scale overflowed: ggml would write inf, and llama.cpp then rejects the file.

    ``weights`` = (x, fmt): the input, checked for NaN/inf first when a scale is bad, so that
    a bad weight is named as such rather than as an overflow.
    """
    for name, value in fields._asdict().items():
        # inf and NaN are the fp16 values with all exponent bits set, the only ones whose bits
        # without the sign reach 0x7C00 (an integer test: numpy's float16 arithmetic is not
        # vectorised; a max, not a compare and any, saves a pass)
        if value.dtype == np.float16 and np.maximum.reduce(value.view(np.uint16) & 0x7FFF, axis=None) >= 0x7C00:
            if weights is not None:
                check_weights(*weights)  # raises if a weight is NaN or inf
            block = first_block + int(np.flatnonzero(~np.isfinite(value))[0])
            raise KQuantError(
                f"block {block}: weights too large for {fmt.name}'s fp16 {name} (it overflows past 65504):"
                f" scale the tensor down, or use a format with more headroom"
            )


def dequantize(q, qtype) -> np.ndarray:
    """Decode bytes made by ``quantize`` (or llama.cpp) back to float32, as ggml's ``dequantize_row_*``.

    ``q`` is uint8 with a last axis that is a multiple of the type's block bytes.
    Returns float32 of shape ``(*q.shape[:-1], n_per_row)``.
    """
    fmt = get_format(qtype)
    keep_freed_memory()
    q = check_bytes(q, fmt)
    blocks = q.reshape(-1, fmt.type_size)
    out = np.empty((blocks.shape[0], fmt.block_size), dtype=np.float32)
    step = _DECODE_CHUNK // fmt.block_size
    for i in range(0, blocks.shape[0], step):
        fmt.module.dequantize_blocks(blocks[i : i + step], out=out[i : i + step])  # writes in place: no copy
    return out.reshape(*q.shape[:-1], q.shape[-1] // fmt.type_size * fmt.block_size)


# The input checks below are shared with kquant.reference: whatever reaches ggml's C code
# has passed the same rules as what reaches kquant's numpy code.


def check_bytes(q, fmt: Format) -> np.ndarray:
    """Check a decoder's input and return it as C-contiguous uint8."""
    q = np.asarray(q)
    if q.dtype != np.uint8:
        raise KQuantError(
            f"dequantize expects uint8 bytes, got {q.dtype}: pass the array quantize() returned, or q.view(np.uint8)"
        )
    if q.ndim == 0 or q.size == 0:
        raise KQuantError(
            f"dequantize got an empty array (shape {q.shape}): pass at least one {fmt.name} block of "
            f"{fmt.type_size} bytes"
        )
    if q.shape[-1] % fmt.type_size:
        raise KQuantError(
            f"last axis has {q.shape[-1]} bytes, not a multiple of {fmt.name}'s {fmt.type_size}-byte block:"
            f" is this really {fmt.name} data, and is the row complete?"
        )
    return np.ascontiguousarray(q)


def check_weights(x, fmt: Format, finite: bool = True) -> np.ndarray:
    """Check an encoder's input and return it as C-contiguous float32 (never modifying it).

    ``finite=False`` skips the NaN/Inf check, for a caller that makes it itself.
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise KQuantError(
            f"quantize expects floating-point weights, got dtype {x.dtype}: convert with x.astype(np.float32)"
        )
    if x.ndim == 0 or x.size == 0:
        raise KQuantError(
            f"quantize got an empty array (shape {x.shape}): pass at least one block of {fmt.block_size} weights"
        )
    if x.shape[-1] % fmt.block_size:
        raise KQuantError(
            f"last axis has {x.shape[-1]} weights, not a multiple of {fmt.name}'s block size {fmt.block_size}:"
            f" pad or reshape the rows (llama.cpp would fall back to another type for such a tensor)"
        )
    if x.dtype != np.float32 or not x.flags.c_contiguous:  # (already so: no errstate to enter, ~1 us a call)
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused below
            x = np.ascontiguousarray(x, dtype=np.float32)  # float16/64 -> float32 exactly as a cast in C would
    if finite and not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x))
        raise KQuantError(
            f"{bad.size} weight(s) are NaN or Inf (first at flat index {bad[0]}): llama.cpp would write a broken "
            "file; fix or drop them first"
        )
    return x
