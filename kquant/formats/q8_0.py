"""Q8_0: 32 weights share one fp16 scale; each weight is a signed 8-bit integer.

    y = d * q        q in -127..127,  d = max|x| / 127

8.5 bits per weight (8 for q, 16/32 for d). The simplest absmax quantizer in ggml,
and the only one that rounds half *away from zero* (C's ``roundf``).
"""

from typing import NamedTuple

import numpy as np

from kquant.formats.cops import (
    as_float,
    c_float_to_int8,
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
    to_fp16,
)

QK = 32  # QK8_0
TYPE_SIZE = 34
# A NaN or inf weight makes its block's max |x|, and so d, NaN or inf: quantize() finds it in the
# scales it checks anyway (see q4_0.py).
NONFINITE_REACHES_SCALES = True

# block_q8_0, 34 bytes:
#
# offset  0      2                          34
# | d    | qs[32]                   |
# | fp16 | int8, one per weight     |


class Fields(NamedTuple):
    d: np.ndarray  # (n,) float16
    q: np.ndarray  # (n, 32) int8


def roundf(v: np.ndarray) -> np.ndarray:
    """C's roundf: halves go away from zero (2.5 -> 3, -2.5 -> -3), unlike np.rint."""
    if np.ndim(v) == 0:  # the in-place steps below need arrays
        return roundf(np.reshape(v, 1))[0]
    a = np.abs(v)
    r = np.floor(a)
    np.subtract(a, r, out=a)  # a - floor(a): exact in float32
    r += (a >= f32(0.5)).view(np.uint8)
    # copysign(r, v), done on the bits (np.copysign runs ~5x slower): r >= 0 takes v's sign bit.
    bits = np.dtype(f"u{r.dtype.itemsize}")  # float16/32/64 alike (the rounding notebook passes float64)
    sign = np.bitwise_and(v.view(bits), bits.type(1 << (8 * r.dtype.itemsize - 1)), out=a.view(bits))
    r.view(bits)[...] |= sign
    return r


@c_semantics
def encode(x: np.ndarray) -> Fields:
    """quantize_row_q8_0_ref: x (n, 32) float32 -> Fields."""
    # Blocks side by side, (8, n, 4), as in Q4_0: the per-block max and the broadcasts run along
    # long rows (see cops.lanes). Our own copy: it is scaled in place below.
    xl = lanes(x)
    hi, lo = lane_max_min(xl)
    amax = np.abs(np.maximum(hi, -lo))  # max |x|; abs: C's amax of zeros is +0 (numpy may keep a -0)
    d = amax / f32(127)
    id_, finite = inverse_or_zero(d)
    if not finite:  # a subnormal max made id inf: C's conversions wrap, reproduced slowly
        v = roundf(np.multiply(xl, per_lane(id_), out=xl))
        return Fields(to_fp16(d), lanes_to_rows(c_float_to_int8(v).astype(np.int8)).view(np.int8))
    # roundf(x*id) without a float pass per step: j = (int)(2*x*id) truncates the doubled value
    # (doubling is exact), then roundf = (j + 1) >> 1 for j >= 0 and j >> 1 below (halves go away
    # from zero). x*(2*id) has the bits of 2*(x*id): scaling by 2 commutes with rounding.
    j = np.empty(xl.shape, dtype=np.int16)  # |2*x*id| <= 254: int16
    np.multiply(xl, per_lane(id_ + id_), out=j, casting="unsafe")  # float32 product, truncated: C's (int)
    j += j >= 0
    j >>= 1
    return Fields(to_fp16(d), lanes_to_rows(j.astype(np.int8)).view(np.int8))


def encode_impl(rows: np.ndarray, imatrix: np.ndarray) -> Fields:
    """ggml's Q8_0 ignores the importance matrix: this is ``encode``, row by row."""
    return encode(rows.reshape(-1, QK))


def pack(f: Fields) -> np.ndarray:
    out = np.empty((f.q.shape[0], TYPE_SIZE), dtype=np.uint8)
    put_fp16(out, 0, f.d)
    put_field(out, 2, f.q.view(np.uint8))
    return out


def unpack(b: np.ndarray) -> Fields:
    return Fields(fp16_field(b[:, 0:2]), b[:, 2:34].view(np.int8))


def decode(f: Fields, out: np.ndarray | None = None) -> np.ndarray:
    """dequantize_row_q8_0: d * q (``out``, if given, receives the result)."""
    y = as_float(f.q, out)  # cast, then multiply in place: faster than a mixed int8 * float32 ufunc
    y *= per_weight(fp16_value(f.d)[:, None], QK)
    return y


def dequantize_blocks(b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return decode(unpack(b), out)
