"""Q5_1: Q4_1 with a fifth bit per level (kept in ``qh`` as in Q5_0).

    y = d * q + m        q in 0..31,  d = (max - min) / 31,  m = min

6 bits per weight (5 + 32/32).
"""

from typing import NamedTuple

import numpy as np

from kquant.formats.cops import (
    c_float_to_uint8,
    c_semantics,
    f32,
    first_zeros,
    fp16_field,
    inverse_or_zero,
    lane_max_min,
    lanes,
    lanes_to_rows,
    per_lane,
    put_field,
    put_fp16,
    to_fp16,
)
from kquant.formats.q4_0 import pack_nibbles, row_importance, unpack_nibbles
from kquant.formats.q4_1 import decode as _decode_q4_1
from kquant.formats.q5_0 import pack_qh, unpack_qh
from kquant.formats.search import make_qkx3_quants

QK = 32  # QK5_1
TYPE_SIZE = 24
NONFINITE_REACHES_SCALES = True  # a NaN or inf weight makes d or m non-finite (see q4_0.py)

# block_q5_1, 24 bytes:
#
# offset  0      2      4             8                   24
# | d    | m    | qh[4]       | qs[16]            |
# | fp16 | fp16 | fifth bits  | low nibbles       |


class Fields(NamedTuple):
    d: np.ndarray  # (n,) float16
    m: np.ndarray  # (n,) float16
    q: np.ndarray  # (n, 32) uint8 in 0..31


@c_semantics
def encode(x: np.ndarray) -> Fields:
    """quantize_row_q5_1_ref: x (n, 32) float32 -> Fields."""
    xl = lanes(x)  # (8, n, 4): blocks side by side, as in Q4_0 (our own copy: worked on in place)
    hi, lo = lane_max_min(xl)
    lo, hi = first_zeros(lo, hi, lambda rows: x[rows])
    d = (hi - lo) / f32(31)
    id_, finite = inverse_or_zero(d)
    v = np.subtract(xl, per_lane(lo), out=xl)
    v *= per_lane(id_)
    # (uint8_t)(x + 0.5f): no MIN here in C; with every id finite the value cannot pass 31.5
    if finite:
        q = np.empty(v.shape, dtype=np.uint8)
        np.add(v, f32(0.5), out=q, casting="unsafe")  # float32 sum, truncated into bytes: one pass
    else:
        q = c_float_to_uint8(v + f32(0.5)).astype(np.uint8)
    return Fields(to_fp16(d), to_fp16(lo), lanes_to_rows(q))


@c_semantics
def encode_impl(rows: np.ndarray, imatrix: np.ndarray) -> Fields:
    """quantize_row_q5_1_impl: the K-quants' asymmetric search (make_qkx3_quants), importance-weighted."""
    xt, w = row_importance(rows, imatrix)
    scale, the_min, L = make_qkx3_quants(xt, w, 31)
    return Fields(to_fp16(scale), to_fp16(-the_min), np.ascontiguousarray(L.T))


def pack(f: Fields) -> np.ndarray:
    out = np.empty((f.q.shape[0], TYPE_SIZE), dtype=np.uint8)
    put_fp16(out, 0, f.d)
    put_fp16(out, 2, f.m)
    put_field(out, 4, pack_qh(f.q))
    put_field(out, 8, pack_nibbles(f.q))
    return out


def unpack(b: np.ndarray) -> Fields:
    return Fields(fp16_field(b[:, 0:2]), fp16_field(b[:, 2:4]), unpack_nibbles(b[:, 8:24]) | unpack_qh(b[:, 4:8]))


def decode(f: Fields, out: np.ndarray | None = None) -> np.ndarray:
    """dequantize_row_q5_1: the Q4_1 formula, q * d + m, with 5-bit levels."""
    return _decode_q4_1(f, out)


def dequantize_blocks(b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return decode(unpack(b), out)
