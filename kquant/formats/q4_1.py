"""Q4_1: 32 weights share an fp16 scale and an fp16 minimum; levels are 4-bit.

    y = d * q + m        q in 0..15,  d = (max - min) / 15,  m = min

The min makes the grid asymmetric, so an all-positive block does not waste half its
levels. 5 bits per weight (4 + 32/32).
"""

from typing import NamedTuple

import numpy as np

from kquant.formats.cops import (
    as_float,
    c_semantics,
    f32,
    first_zeros,
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
    to_fp16,
)
from kquant.formats.q4_0 import pack_nibbles, row_importance, truncate_levels, unpack_nibbles
from kquant.formats.search import make_qkx3_quants

QK = 32  # QK4_1
TYPE_SIZE = 20
NONFINITE_REACHES_SCALES = True  # a NaN or inf weight makes d or m non-finite (see q4_0.py)

# block_q4_1, 20 bytes:
#
# offset  0      2      4                        20
# | d    | m    | qs[16]                 |
# | fp16 | fp16 | nibbles as in Q4_0     |


class Fields(NamedTuple):
    d: np.ndarray  # (n,) float16
    m: np.ndarray  # (n,) float16: the block minimum
    q: np.ndarray  # (n, 32) uint8 in 0..15


@c_semantics
def encode(x: np.ndarray) -> Fields:
    """quantize_row_q4_1_ref: x (n, 32) float32 -> Fields."""
    xl = lanes(x)  # (8, n, 4): blocks side by side, as in Q4_0 (our own copy: worked on in place)
    hi, lo = lane_max_min(xl)
    lo, hi = first_zeros(lo, hi, lambda rows: x[rows])  # C's scans keep the first zero they see
    d = (hi - lo) / f32(15)
    id_, finite = inverse_or_zero(d)
    v = np.subtract(xl, per_lane(lo), out=xl)
    v *= per_lane(id_)
    # 0 <= v <= (max - min) * id = 15 to a few ulps (an id that is finite has d >= 2**-128, rounded
    # to within 2**-21), so v + 0.5 < 16: C's MIN(15, ...) cannot act and its pass is skipped.
    q = truncate_levels(v, 0.5, 15, finite, below_top=True)
    return Fields(to_fp16(d), to_fp16(lo), lanes_to_rows(q))


@c_semantics
def encode_impl(rows: np.ndarray, imatrix: np.ndarray) -> Fields:
    """quantize_row_q4_1_impl: the K-quants' asymmetric search (make_qkx3_quants), importance-weighted."""
    xt, w = row_importance(rows, imatrix)
    scale, the_min, L = make_qkx3_quants(xt, w, 15)
    return Fields(to_fp16(scale), to_fp16(-the_min), np.ascontiguousarray(L.T))


def pack(f: Fields) -> np.ndarray:
    out = np.empty((f.q.shape[0], TYPE_SIZE), dtype=np.uint8)
    put_fp16(out, 0, f.d)
    put_fp16(out, 2, f.m)
    put_field(out, 4, pack_nibbles(f.q))
    return out


def unpack(b: np.ndarray) -> Fields:
    return Fields(fp16_field(b[:, 0:2]), fp16_field(b[:, 2:4]), unpack_nibbles(b[:, 4:20]))


def decode(f: Fields, out: np.ndarray | None = None) -> np.ndarray:
    """dequantize_row_q4_1: q * d + m (``out``, if given, receives the result)."""
    y = as_float(f.q, out)
    y *= per_weight(fp16_value(f.d)[:, None], QK)
    y += per_weight(fp16_value(f.m)[:, None], QK)
    return y


def dequantize_blocks(b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return decode(unpack(b), out)
