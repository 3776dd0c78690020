"""Q5_0: Q4_0 with one more bit per weight, kept in a separate 32-bit mask.

    y = d * (q - 16)        q in 0..31,  d = max / -16

5.5 bits per weight. The low 4 bits of each level sit in nibbles exactly as in
Q4_0; the fifth bits of all 32 weights form one little-endian uint32, ``qh``.
"""

from typing import NamedTuple

import numpy as np

from kquant.formats.cops import (
    absmax_of,
    as_float,
    byte_field,
    c_semantics,
    f32,
    fp16_field,
    fp16_value,
    inverse_or_zero,
    lane_max_min,
    lanes,
    lanes_to_rows,
    per_lane,
    per_weight,
    put_field,
    put_fp16,
    shift_bytes,
    to_fp16,
)
from kquant.formats.q4_0 import pack_nibbles, row_importance, truncate_levels, unpack_nibbles
from kquant.formats.search import make_qx_quants

QK = 32  # QK5_0
TYPE_SIZE = 22
NONFINITE_REACHES_SCALES = True  # a NaN or inf weight makes d non-finite (see q4_0.py)

# block_q5_0, 22 bytes:
#
# offset  0      2             6                          22
# | d    | qh[4]       | qs[16]                   |
# | fp16 | bit j = bit | low 4 bits, nibbles as   |
# | 4 of q[j]   | in Q4_0                  |


class Fields(NamedTuple):
    d: np.ndarray  # (n,) float16
    q: np.ndarray  # (n, 32) uint8 in 0..31


def pack_qh(q: np.ndarray) -> np.ndarray:
    """(n, 32) 5-bit levels -> (n, 4) bytes: bit j of the little-endian uint32 is bit 4 of q[j].

    Byte k of qh holds the fifth bits of q[8k .. 8k+7], the 8 bytes of one little-endian uint64
    word w. ``w & 0x1010...10`` leaves the bit of q[8k+i] at bit 8i + 4; multiplying by
    0x0010204081020408 (the sum of 2**(52 - 7i)) adds a copy of it at bit 56 + i. No two copies
    land on one bit, so nothing carries: the top byte is the 8 bits in order.
    """
    w = np.ascontiguousarray(q, dtype=np.uint8).view("<u8")  # (n, 4)
    bits = w & np.uint64(0x1010101010101010)
    bits *= np.uint64(0x0010204081020408)  # in place: one temporary in all, not three
    bits >>= np.uint64(56)
    return bits.astype(np.uint8)


def unpack_qh(qh: np.ndarray) -> np.ndarray:
    """(n, 4) bytes -> (n, 32) values 0 or 16 to add to the low nibbles."""
    bits = np.unpackbits(byte_field(qh).reshape(-1), bitorder="little")  # flat: ~5x faster than along rows
    return shift_bytes(bits.reshape(qh.shape[0], 32), 4)  # << 4, 8 bytes at a time (numpy shifts bytes one by one)


@c_semantics
def encode(x: np.ndarray) -> Fields:
    """quantize_row_q5_0_ref: x (n, 32) float32 -> Fields."""
    xl = lanes(x)  # (8, n, 4): blocks side by side, as in Q4_0 (our own copy: scaled in place)
    hi, lo = lane_max_min(xl)
    d = absmax_of(hi, lo, lambda rows: x[rows]) / f32(-16)
    id_, finite = inverse_or_zero(d)
    v = np.multiply(xl, per_lane(id_), out=xl)
    q = truncate_levels(v, 16.5, 31, finite)
    return Fields(to_fp16(d), lanes_to_rows(q))


@c_semantics
def encode_impl(rows: np.ndarray, imatrix: np.ndarray) -> Fields:
    """quantize_row_q5_0_impl: make_qx_quants with nmax 16, importance-weighted."""
    xt, w = row_importance(rows, imatrix)
    d, L = make_qx_quants(xt, 16, qw=w)  # L = level + 16, in 0..31
    return Fields(to_fp16(d), np.ascontiguousarray(L.T))


def pack(f: Fields) -> np.ndarray:
    out = np.empty((f.q.shape[0], TYPE_SIZE), dtype=np.uint8)
    put_fp16(out, 0, f.d)
    put_field(out, 2, pack_qh(f.q))
    put_field(out, 6, pack_nibbles(f.q))
    return out


def unpack(b: np.ndarray) -> Fields:
    return Fields(fp16_field(b[:, 0:2]), unpack_nibbles(b[:, 6:22]) | unpack_qh(b[:, 2:6]))


def decode(f: Fields, out: np.ndarray | None = None) -> np.ndarray:
    """dequantize_row_q5_0: d * (q - 16) (``out``, if given, receives the result)."""
    y = as_float(f.q.view(np.int8) - np.int8(16), out)  # q - 16 in bytes (cheap), then one conversion
    y *= per_weight(fp16_value(f.d)[:, None], QK)
    return y


def dequantize_blocks(b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return decode(unpack(b), out)
