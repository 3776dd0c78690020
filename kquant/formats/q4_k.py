"""Q4_K: 4-bit levels with a 6-bit scale and min per 32 weights, under two fp16 super-scales.

A super-block holds QK_K = 256 weights as 8 sub-blocks of 32. Weight e of sub-block j
decodes as

    y = (d * sc[j]) * q[e] - (dmin * m[j])        q in 0..15, sc and m in 0..63

so the sub-block scales and mins are themselves quantized (to 6 bits) against the
two fp16 numbers d and dmin: "quantized scales" is what the K family adds to Q4_1.
4.5 bits per weight: 4 for the level + (2*16 + 8*12) / 256 for the scales.
"""

from typing import NamedTuple

import numpy as np

from kquant.formats.cops import (
    as_float,
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
    split_nibbles,
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
TYPE_SIZE = 144

# block_q4_K, 144 bytes:
#
# offset  0      2        4                  16                                   144
# | d    | dmin   | scales[12]       | qs[128]                            |
# | fp16 | fp16   | 8 x (6-bit sc,   | 256 x 4-bit levels, two per byte   |
# 6-bit m), packed  |                                    |
#
# scales[12] (get_scale_min_k4): sub-blocks 0-3 fit in 6 bits of a byte; 4-7 are split.
#
# byte  0..3 : sc[0..3] (bits 0-5)  | bits 4-5 of sc[4..7] in bits 6-7
# byte  4..7 : m[0..3]  (bits 0-5)  | bits 4-5 of m[4..7]  in bits 6-7
# byte  8..11: low 4 bits of sc[4..7] (bits 0-3) | low 4 bits of m[4..7] (bits 4-7)
#
# qs[128]: four chunks of 64 weights; byte 32c + l holds weight 64c + l in its low
# nibble and weight 64c + 32 + l in its high nibble.


class Fields(NamedTuple):
    """One Q4_K super-block per row, unpacked. Shapes for n blocks:"""

    d: np.ndarray  # (n,) float16: scale of the sub-block scales
    dmin: np.ndarray  # (n,) float16: scale of the sub-block mins
    sc: np.ndarray  # (n, 8) uint8 in 0..63
    m: np.ndarray  # (n, 8) uint8 in 0..63
    q: np.ndarray  # (n, 256) uint8 in 0..15


def subblock_weights(xt: np.ndarray) -> np.ndarray:
    """How much each weight counts in its sub-block's fit: |x| plus the sub-block's RMS.

    xt: (32, G), one sub-block per column. Big weights are fitted more closely, and no
    weight counts for nothing.
    """
    av_x = np.sqrt(seqsum(xt * xt) / f32(32))
    w = np.abs(xt)
    w += av_x
    return w


def subblock_fit(xt: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int):
    """Fit every 32-weight sub-block, as quantize_row_q4_K_ref / q5_K_ref do. xt: (32, G)."""
    return make_qkx2_quants(xt, subblock_weights(xt), nmax, rmin, rdelta, nstep, use_mad=False)


@c_semantics
def quantize_scales(scales: np.ndarray, mins: np.ndarray):
    """Quantize (n, 8) sub-block scales and mins to 6 bits under fp16 d and dmin."""
    max_scale = np.maximum(scales.max(axis=1), f32(0))  # running max from 0, as in C
    max_min = np.maximum(mins.max(axis=1), f32(0))
    inv_scale = np.where(max_scale > 0, f32(63) / max_scale, f32(0))
    inv_min = np.where(max_min > 0, f32(63) / max_min, f32(0))
    # uint8_t ls = nearest_int(...): the store wraps modulo 256 *before* MIN(63, ls).
    sc = np.minimum(63, c_to_uint8(nearest_int(inv_scale[:, None] * scales)))
    m = np.minimum(63, c_to_uint8(nearest_int(inv_min[:, None] * mins)))
    d = to_fp16(max_scale / f32(63))
    dmin = to_fp16(max_min / f32(63))
    return d, dmin, sc.astype(np.uint8), m.astype(np.uint8)


@c_semantics
def requantize(xt: np.ndarray, L: np.ndarray, d: np.ndarray, dmin: np.ndarray, sc, m, nmax: int) -> np.ndarray:
    """Round every weight again against the *quantized* scale and min it will be decoded with.

    xt, L: (32, G); d, dmin: (n,) float16; sc, m: (n, 8). A sub-block whose
    quantized scale is 0 keeps its levels from the search (C skips it).
    """
    return requantize_rows(xt.T, L, d, dmin, sc, m, nmax).T


def requantize_rows(x: np.ndarray, L: np.ndarray, d: np.ndarray, dmin: np.ndarray, sc, m, nmax: int) -> np.ndarray:
    """``requantize`` with x as (G, 32) rows, the blocks' own layout: (G, 32) levels, no transpose back."""
    dq = (fp16_value(d)[:, None] * sc).reshape(-1)  # (G,)
    dm = (fp16_value(dmin)[:, None] * m).reshape(-1)
    return requantize_levels(x, dq, dm, 0, nmax, L)


@c_semantics
def encode(x: np.ndarray) -> Fields:
    """quantize_row_q4_K_ref, stopping before the bytes: x (n, 256) float32 -> Fields."""
    n = x.shape[0]
    xt = columns(x.reshape(n * 8, 32))  # (32, G): sub-blocks side by side
    scales, mins, L = subblock_fit(xt, nmax=15, rmin=-1.0, rdelta=0.1, nstep=20)
    d, dmin, sc, m = quantize_scales(scales.reshape(n, 8), mins.reshape(n, 8))
    q = requantize_rows(x.reshape(-1, 32), L, d, dmin, sc, m, nmax=15)
    return Fields(d, dmin, sc, m, q.reshape(n, 256))


@c_semantics
def subblock_fit_impl(x: np.ndarray, qw: np.ndarray, nmax: int):
    """The imatrix path's fit of every sub-block (quantize_row_q4_K_impl / q5_K_impl).

    x, qw: (n, 256). The search is weighted by the importance of each weight's column,
    times the size of the weight against the super-block's RMS. Returns the (32, G)
    layout with per-sub-block scales, mins, levels and weight sums (the latter weight
    the fit of the block scales).
    """
    n = x.shape[0]
    xt = np.ascontiguousarray(x.T)  # (256, n): sums over the super-block in C order
    sigma2 = (f32(2) * seqsum(xt * xt)) / f32(256)  # (n,)
    xs = columns(x.reshape(n * 8, 32))  # (32, G)
    qws = columns(qw.reshape(n * 8, 32))
    w = importance_weights(xs, qws, np.repeat(sigma2, 8))
    sw = seqsum(w)  # (G,)
    scales, mins, L = make_qkx3_quants(xs, w, nmax)
    return xs, scales, mins, L, sw


@c_semantics
def fit_block_scales(scales: np.ndarray, mins: np.ndarray, sw: np.ndarray):
    """make_qp_quants on the 8 scales and the 8 mins of each block, weighted by the sub-block weight sums.

    scales, mins, sw: (n, 8). Returns d, dmin (fp16) and the 6-bit sc, m as ggml stores them.
    """
    swt = np.ascontiguousarray(sw.T)
    d_block, Ls = make_qp_quants(np.ascontiguousarray(scales.T), 63, swt)
    m_block, Lm = make_qp_quants(np.ascontiguousarray(mins.T), 63, swt)
    return (
        to_fp16(d_block),
        to_fp16(m_block),
        np.ascontiguousarray(Ls.T),
        np.ascontiguousarray(Lm.T),
    )


def encode_impl(rows: np.ndarray, imatrix: np.ndarray) -> Fields:
    """quantize_row_q4_K_impl: rows (r, n_per_row) float32 and imatrix (n_per_row,) -> Fields."""
    x, qw = blocks_and_importance(rows, imatrix, QK)
    n = x.shape[0]
    xs, scales, mins, L, sw = subblock_fit_impl(x, qw, nmax=15)
    d, dmin, sc, m = fit_block_scales(scales.reshape(n, 8), mins.reshape(n, 8), sw.reshape(n, 8))
    # ggml stores Ls / Lm into the 6-bit fields unclamped (Q5_K clamps them), then reads them back for
    # the final levels. A sub-block the weighted search gave a negative scale wraps past 63 there, and
    # its top bits spill into another sub-block's: the levels must use what the decoder will read.
    sc, m = unpack_scales(pack_scales(sc, m))
    q = requantize_rows(x.reshape(-1, 32), L, d, dmin, sc, m, nmax=15)
    return Fields(d, dmin, sc, m, q.reshape(n, 256))


def pack_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(n, 8) 6-bit scales and mins -> (n, 12) bytes (layout above)."""
    out = np.empty((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
    return out


def unpack_scales(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 12) bytes -> (n, 8) scales, (n, 8) mins: get_scale_min_k4 for all j at once."""
    t = np.ascontiguousarray(byte_field(b).T)  # (12, n): byte rows, so each step runs along all blocks
    sc = np.empty((8, b.shape[0]), dtype=np.uint8)
    m = np.empty_like(sc)
    sc[0:4] = t[0:4] & 63
    m[0:4] = t[4:8] & 63
    sc[4:8] = (t[8:12] & 0xF) | ((t[0:4] >> 6) << 4)
    m[4:8] = (t[8:12] >> 4) | ((t[4:8] >> 6) << 4)
    return sc.T, m.T


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(n, 256) 4-bit levels -> (n, 128) bytes (low nibble: first 32 of each 64): bit_planes' inverse."""
    return join_planes(q, 4, 32)


def unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, 128) bytes -> (n, 256) 4-bit levels (per 32 bytes: the low nibbles, then the high ones)."""
    return split_nibbles(qs, 32)


def pack(f: Fields) -> np.ndarray:
    out = np.empty((f.q.shape[0], TYPE_SIZE), dtype=np.uint8)
    put_fp16(out, 0, f.d)
    put_fp16(out, 2, f.dmin)
    out[:, 4:16] = pack_scales(f.sc, f.m)
    out[:, 16:144] = pack_nibbles(f.q)
    return out


def unpack(b: np.ndarray) -> Fields:
    sc, m = unpack_scales(b[:, 4:16])
    return Fields(fp16_field(b[:, 0:2]), fp16_field(b[:, 2:4]), sc, m, unpack_nibbles(b[:, 16:144]))


def decode(f: Fields, out: np.ndarray | None = None) -> np.ndarray:
    """dequantize_row_q4_K: (d*sc)*q - dmin*m, rounded after each step as in C (into ``out`` if given)."""
    d1 = fp16_value(f.d)[:, None] * f.sc  # (n, 8)
    m1 = fp16_value(f.dmin)[:, None] * f.m
    y = as_float(f.q, out)
    y *= per_weight(d1, 32)
    y -= per_weight(m1, 32)
    return y


def dequantize_blocks(b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return decode(unpack(b), out)
