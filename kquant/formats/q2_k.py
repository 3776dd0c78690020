"""Q2_K: 2-bit levels with a 4-bit scale and 4-bit min per 16 weights, under fp16 d and dmin.

A super-block of QK_K = 256 weights has 16 groups of 16. Weight e of group j decodes as

    y = (d * (scales[j] & 15)) * q[e] - dmin * (scales[j] >> 4)        q in 0..3

The group fits minimise the *absolute* error weighted by |x| (use_mad): with only
four levels, squared error lets one outlier drag the whole grid. 2.625 bits per weight.
"""

from typing import NamedTuple

import numpy as np

from kquant.formats.cops import (
    as_float,
    bit_planes,
    byte_field,
    c_semantics,
    c_to_uint8,
    columns,
    f32,
    fp16_field,
    fp16_value,
    join_planes,
    nearest_int,
    per_weight,
    put_fp16,
    seqsum,
    to_fp16,
)
from kquant.formats.search import (
    blocks_and_importance,
    importance_weights,
    make_qkx2_quants,
    make_qkx3_quants,
    make_qp_quants,
    requantize_levels,
)

QK = 256  # QK_K
TYPE_SIZE = 84

# block_q2_K, 84 bytes:
#
# offset  0                     16                              80     82     84
# | scales[16]          | qs[64]                        | d    | dmin |
# | per group: scale in | 2-bit levels, four per byte   | fp16 | fp16 |
# | low nibble, min in  |                               |
# | high nibble         |
#
# qs: per half h = 0, 1 (128 weights), byte 32h + l holds weights 128h + 32k + l
# in bits 2k..2k+1, k = 0..3.


class Fields(NamedTuple):
    d: np.ndarray  # (n,) float16: scale of the group scales
    dmin: np.ndarray  # (n,) float16: scale of the group mins
    scales: np.ndarray  # (n, 16) uint8: scale | min << 4
    q: np.ndarray  # (n, 256) uint8 in 0..3


@c_semantics
def encode(x: np.ndarray) -> Fields:
    """quantize_row_q2_K_ref: x (n, 256) float32 -> Fields."""
    n = x.shape[0]
    xt = columns(x.reshape(n * 16, 16))  # (16, G)
    scale, the_min, L = make_qkx2_quants(xt, np.abs(xt), 3, -0.5, 0.1, 15, use_mad=True)
    # The 16 scales and the 16 mins of every block side by side, (16, 2, n): each block's largest
    # is then a reduction down axis 0 (numpy reduces a row of 16 ~4x slower), and both are
    # quantized by one broadcast multiply.
    sm = np.ascontiguousarray(np.stack([scale, the_min]).reshape(2, n, 16).transpose(2, 0, 1))
    max_sm = np.maximum(np.maximum.reduce(sm, axis=0), f32(0))  # [max_scale, max_min], each from 0 as in C
    l = nearest_int((f32(15) / max_sm) * sm)  # (16, 2, n): [ls, lm]
    # y.scales[j] = ls (a uint8 store: its low byte), then |= lm << 4 (low byte again); each half
    # only when its max is > 0.
    l = np.where(max_sm > 0, l, 0).astype(np.uint8)
    sc = np.ascontiguousarray((l[:, 0] | (l[:, 1] << 4)).T)  # (n, 16)
    d, dmin = to_fp16(np.where(max_sm > 0, max_sm / f32(15), f32(0)))
    return _requantize(x, L, d, dmin, sc)


@c_semantics
def encode_impl(rows: np.ndarray, imatrix: np.ndarray) -> Fields:
    """quantize_row_q2_K_impl: rows (r, n_per_row) float32 and imatrix (n_per_row,) -> Fields.

    The groups are fitted by weighted squared error (not |error|), and the 16 scales
    and 16 mins of a block by make_qp_quants, weighted by each group's total importance.
    """
    x, qw = blocks_and_importance(rows, imatrix, QK)
    n = x.shape[0]
    xb = np.ascontiguousarray(x.T)  # (256, n)
    sigma2 = seqsum(xb * xb) / f32(256)
    xt = columns(x.reshape(n * 16, 16))  # (16, G)
    w = importance_weights(xt, columns(qw.reshape(n * 16, 16)), np.repeat(sigma2, 16))
    sw = np.ascontiguousarray(seqsum(w).reshape(n, 16).T)  # (16, n)
    scale, the_min, L = make_qkx3_quants(xt, w, 3)
    dm, Ls = make_qp_quants(np.ascontiguousarray(scale.reshape(n, 16).T), 15, sw)
    mm, Lm = make_qp_quants(np.ascontiguousarray(the_min.reshape(n, 16).T), 15, sw)
    sc = c_to_uint8(Ls.T | (Lm.T.astype(np.int32) << 4))
    return _requantize(x, L, to_fp16(dm), to_fp16(mm), sc)


def _requantize(x: np.ndarray, L: np.ndarray, d: np.ndarray, dmin: np.ndarray, sc: np.ndarray) -> Fields:
    """Round every weight again against the scales the decoder will use; a group with scale 0 keeps its levels.

    x: (n, 256) blocks; L: (16, G) levels from the search.
    """
    n = d.shape[0]
    dq = (fp16_value(d)[:, None] * (sc & 0xF)).reshape(-1)  # (G,)
    dm = (fp16_value(dmin)[:, None] * (sc >> 4)).reshape(-1)
    q = requantize_levels(x.reshape(-1, 16), dq, dm, 0, 3, L)
    return Fields(d, dmin, sc, q.reshape(n, 256))


def pack_crumbs(q: np.ndarray) -> np.ndarray:
    """(n, 256) 2-bit values -> (n, 64) bytes (layout above). Shared with Q3_K."""
    # Per 32 bytes (one half, 128 weights), weights 32k + l go to bits 2k of byte l: q[:, h, 0] |
    # q[:, h, 1] << 2 | ..., joined 8 bytes at a time (~3x faster than on rows of 32 bytes).
    return join_planes(q, 2, 32)


def unpack_crumbs(qs: np.ndarray) -> np.ndarray:
    """(n, 64) bytes -> (n, 256) 2-bit values."""
    return bit_planes(qs, 2, 32)  # per 32 bytes: bits 0-1 of each, then bits 2-3, 4-5, 6-7


def pack(f: Fields) -> np.ndarray:
    out = np.empty((f.q.shape[0], TYPE_SIZE), dtype=np.uint8)
    out[:, 0:16] = f.scales
    out[:, 16:80] = pack_crumbs(f.q)
    put_fp16(out, 80, f.d)
    put_fp16(out, 82, f.dmin)
    return out


def unpack(b: np.ndarray) -> Fields:
    return Fields(fp16_field(b[:, 80:82]), fp16_field(b[:, 82:84]), byte_field(b[:, 0:16]), unpack_crumbs(b[:, 16:80]))


def decode(f: Fields, out: np.ndarray | None = None) -> np.ndarray:
    """dequantize_row_q2_K: (d * scale) * q - dmin * min (into ``out`` if given)."""
    dl = fp16_value(f.d)[:, None] * (f.scales & 0xF)  # (n, 16)
    ml = fp16_value(f.dmin)[:, None] * (f.scales >> 4)
    y = as_float(f.q, out)
    y *= per_weight(dl, 16)
    y -= per_weight(ml, 16)
    return y


def dequantize_blocks(b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return decode(unpack(b), out)
