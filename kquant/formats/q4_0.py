"""Q4_0: 32 weights share one fp16 scale; each weight is a 4-bit level around 8.

    y = d * (q - 8)        q in 0..15,  d = max / -8

``max`` is the weight with the largest magnitude, *with its sign*: it lands exactly
on level 0 (= -8 d), the longer end of the asymmetric range -8..7. 4.5 bits per
weight, not 4: the fp16 scale costs 16/32 of a bit.
"""

from typing import NamedTuple

import numpy as np

from kquant.formats.cops import (
    absmax_of,
    as_float,
    c_float_to_int8,
    c_semantics,
    c_to_uint8,
    columns,
    f32,
    fp16_field,
    fp16_value,
    inverse_or_zero,
    join_planes,
    lane_max_min,
    lanes,
    lanes_to_rows,
    mask_bytes,
    per_lane,
    per_weight,
    put_field,
    put_fp16,
    split_nibbles,
    to_fp16,
)
from kquant.formats.search import blocks_and_importance, importance_weights, make_qx_quants, row_mean_square

QK = 32  # QK4_0
TYPE_SIZE = 18
# A NaN or inf weight makes its block's d NaN or inf, which quantize() finds in the scales it
# checks anyway: no separate pass over the input (~10 % of an encode) is needed to find it.
NONFINITE_REACHES_SCALES = True

# block_q4_0, 18 bytes:
#
# offset  0      2                                   18
# | d    | qs[16]                            |
# | fp16 | byte j: weight j (low nibble),    |
# weight j + 16 (high nibble)       |


class Fields(NamedTuple):
    d: np.ndarray  # (n,) float16
    q: np.ndarray  # (n, 32) uint8 in 0..15


@c_semantics
def encode(x: np.ndarray) -> Fields:
    """quantize_row_q4_0_ref: x (n, 32) float32 -> Fields."""
    # Blocks side by side, (8, n, 4): per-block reductions and broadcasts then run along long
    # rows, ~5x faster than along rows of 32 (see lanes()). Our own copy: scaled in place below.
    xl = lanes(x)
    hi, lo = lane_max_min(xl)
    d = absmax_of(hi, lo, lambda rows: x[rows]) / f32(-8)  # the weight of largest |x|, with its sign
    id_, finite = inverse_or_zero(d)  # the unrounded d, not fp16(d)
    # (int8_t)(x*id + 8.5f): truncation of a non-negative sum = round half up
    v = np.multiply(xl, per_lane(id_), out=xl)
    q = truncate_levels(v, 8.5, 15, finite)
    return Fields(to_fp16(d), lanes_to_rows(q))


def truncate_levels(v: np.ndarray, offset: float, top: int, finite: bool, below_top: bool = False) -> np.ndarray:
    """C's ``MIN(top, (int8_t)(v + offset))`` stored into uint8, for v = x*id (Q4_1: (x - min)*id).

    Shared with Q4_1 and Q5_0. With every id finite, 0 <= v + offset < top + 2 (Q4_0, Q5_0:
    |v| <= offset - 1/2; Q4_1: 0 <= v <= 15 to a few ulps), so a plain cast truncates exactly;
    otherwise C's wrapping conversions are reproduced. v is overwritten. ``below_top``: the caller
    knows v + offset < top + 1 when every id is finite (Q4_1), so MIN never acts there and its two
    byte passes are skipped.
    """
    if finite:
        q = np.empty(v.shape, dtype=np.uint8)
        np.add(v, f32(offset), out=q, casting="unsafe")  # float32 sum, truncated into bytes: one pass
        if not below_top:
            q -= q >> top.bit_length()  # MIN(top, q) for q <= top + 1 = 2**k, in two byte passes
        return q
    v += f32(offset)
    return c_to_uint8(np.minimum(top, c_float_to_int8(v))).astype(np.uint8)


def row_importance(rows: np.ndarray, imatrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The legacy _impl paths' view of rows: (32, n) blocks, element axis first, and their weights.

    Unlike the K-quants, the mean square that keeps small weights in play is taken over
    the whole row. Shared by Q4_0, Q4_1, Q5_0 and Q5_1.
    """
    sigma2 = row_mean_square(rows)  # (r,)
    x, qw = blocks_and_importance(rows, imatrix, 32)
    xt, qwt = columns(x), columns(qw)
    return xt, importance_weights(xt, qwt, np.repeat(sigma2, rows.shape[1] // 32))


@c_semantics
def encode_impl(rows: np.ndarray, imatrix: np.ndarray) -> Fields:
    """quantize_row_q4_0_impl: the symmetric search of Q6_K (make_qx_quants), importance-weighted."""
    xt, w = row_importance(rows, imatrix)
    d, L = make_qx_quants(xt, 8, qw=w)  # L = level + 8, in 0..15
    return Fields(to_fp16(d), np.ascontiguousarray(L.T))


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(n, 32) 4-bit values -> (n, 16) bytes: j low, j + 16 high. Shared by Q4_1, Q5_0, Q5_1, IQ4_NL.

    Bits above the nibble are dropped (Q5's fifth bits go to qh). bit_planes' inverse does the
    pairing: per run of 16 bytes, q[0..15] at bit 0 and q[16..31] at bit 4.
    """
    return join_planes(mask_bytes(q, 0x0F), 4, 16)


def unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, 16) bytes -> (n, 32) 4-bit values: the low nibbles, then the high ones."""
    return split_nibbles(qs, 16)


def pack(f: Fields) -> np.ndarray:
    out = np.empty((f.q.shape[0], TYPE_SIZE), dtype=np.uint8)
    put_fp16(out, 0, f.d)
    put_field(out, 2, pack_nibbles(f.q))
    return out


def unpack(b: np.ndarray) -> Fields:
    return Fields(fp16_field(b[:, 0:2]), unpack_nibbles(b[:, 2:18]))


def decode(f: Fields, out: np.ndarray | None = None) -> np.ndarray:
    """dequantize_row_q4_0: d * (q - 8) (``out``, if given, receives the result)."""
    y = as_float(f.q.view(np.int8) - np.int8(8), out)  # q - 8 in bytes (cheap), then one conversion
    y *= per_weight(fp16_value(f.d)[:, None], QK)
    return y


def dequantize_blocks(b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return decode(unpack(b), out)
