"""Q6_K: 6-bit levels with an 8-bit scale per 16 weights, under one fp16 super-scale.

A super-block of QK_K = 256 weights has 16 groups of 16. Weight e of group j decodes as

    y = (d * scales[j]) * (q[e] - 32)        q in 0..63, scales[j] in -128..127

Symmetric (no min): each group's scale comes from make_qx_quants, then the 16 scales
are quantized to int8 against d. 6.5625 bits per weight (6 + (16*8 + 16) / 256).
"""

from typing import NamedTuple

import numpy as np

from kquant.formats.cops import (
    as_float,
    bit_planes,
    c_semantics,
    columns,
    f32,
    fp16_field,
    fp16_value,
    join_planes,
    mask_bytes,
    nearest_int,
    per_weight,
    put_field,
    put_fp16,
    shift_bytes,
    signed_absmax,
    split_nibbles,
    to_fp16,
)
from kquant.formats.search import GROUP_MAX_EPS, blocks_and_importance, make_qx_scale, qx_levels, requantize_levels

QK = 256  # QK_K
TYPE_SIZE = 210


# block_q6_K, 210 bytes:
#
# offset  0                 128              192            208     210
# | ql[128]         | qh[64]         | scales[16]   | d    |
# | low 4 bits      | high 2 bits    | int8, one    | fp16 |
# per 16 weights
#
# Per half h = 0, 1 (128 weights) and l = 0..31, with e_k = 128h + 32k + l:
# ql[64h + l]      = low4(q[e_0]) | low4(q[e_2]) << 4
# ql[64h + 32 + l] = low4(q[e_1]) | low4(q[e_3]) << 4
# qh[32h + l]      = hi2(q[e_0]) | hi2(q[e_1]) << 2 | hi2(q[e_2]) << 4 | hi2(q[e_3]) << 6


class Fields(NamedTuple):
    d: np.ndarray  # (n,) float16
    scales: np.ndarray  # (n, 16) int8
    q: np.ndarray  # (n, 256) uint8 in 0..63 (level + 32)


@c_semantics
def encode(x: np.ndarray) -> Fields:
    """quantize_row_q6_K_ref: x (n, 256) float32 -> Fields."""
    xt = columns(x.reshape(-1, 16))  # (16, G): groups side by side
    scale, iscale = make_qx_scale(xt, nmax=32)  # make_qx_quants, weights x**2; its levels below
    return _quantize_scales_and_requantize(x, xt, scale, iscale)


@c_semantics
def encode_impl(rows: np.ndarray, imatrix: np.ndarray) -> Fields:
    """quantize_row_q6_K_impl: as the reference, but each group's fit is weighted by the raw imatrix."""
    x, qw = blocks_and_importance(rows, imatrix, QK)
    xt = columns(x.reshape(-1, 16))
    scale, iscale = make_qx_scale(xt, nmax=32, qw=columns(qw.reshape(-1, 16)))
    return _quantize_scales_and_requantize(x, xt, scale, iscale)


def _quantize_scales_and_requantize(x: np.ndarray, xt: np.ndarray, scale: np.ndarray, iscale: np.ndarray) -> Fields:
    """The 16 group scales of a block -> int8 under one fp16 d; then every weight rounded again.

    x: (n, 256) blocks, xt (16, 16n) its groups side by side; scale and iscale (16n,) from the search.
    """
    n = x.shape[0]
    scale = scale.reshape(n, 16)
    max_scale = signed_absmax(scale, axis=1)
    empty = np.abs(max_scale) < GROUP_MAX_EPS  # C writes an all-zero block
    iscale_block = f32(-128) / max_scale
    d = to_fp16(np.where(empty, f32(0), f32(1) / iscale_block))  # for real weights, nearly always an fp16 subnormal
    # C: y.scales[j] = MIN(127, nearest_int(iscale * scale[j])), an int stored in int8_t: its low
    # byte, which numpy's int32 -> int8 cast keeps too.
    scales = np.minimum(nearest_int(iscale_block[:, None] * scale), 127).astype(np.int8)
    scales[empty] = 0
    # Requantize against the decoder's scale; a group whose scale is 0 keeps the search's
    # levels (computed only then: for most tensors no group has a zero scale).
    dq = (fp16_value(d)[:, None] * scales).reshape(-1)  # (G,)
    L = qx_levels(xt, iscale, 32) if (dq == 0).any() else None
    q = requantize_levels(x.reshape(-1, 16), dq, None, -32, 31, L).reshape(n, 256)
    q[empty] = 0
    return Fields(d, scales, q)


def pack(f: Fields) -> np.ndarray:
    out = np.empty((f.q.shape[0], TYPE_SIZE), dtype=np.uint8)
    # Per half (128 weights): ql takes the low nibbles of weights 0-63, with those of 64-127
    # above them; qh the high 2 bits of the four runs of 32 weights, at bits 0, 2, 4, 6.
    put_field(out, 0, join_planes(mask_bytes(f.q, 0x0F), 4, 64))
    put_field(out, 128, join_planes(shift_bytes(f.q, -4), 2, 32))
    out[:, 192:208] = f.scales.view(np.uint8)
    put_fp16(out, 208, f.d)
    return out


def unpack(b: np.ndarray) -> Fields:
    # Per half h, split_nibbles gives ql[64h : 64h + 64]'s low nibbles, then its high ones:
    # weights k = 0, 1 (low), then k = 2, 3 (high) of the layout above, already in order.
    lo = split_nibbles(b[:, 0:128], 64)
    hi = bit_planes(b[:, 128:192], 2, 32)  # per half: bits 0-1 of qh[32h + l] (k = 0), then 2-3, 4-5, 6-7
    q = shift_bytes(hi, 4)  # hi << 4 (8 bytes at a time)
    q |= lo
    return Fields(fp16_field(b[:, 208:210]), b[:, 192:208].view(np.int8), q)


def decode(f: Fields, out: np.ndarray | None = None) -> np.ndarray:
    """dequantize_row_q6_K: (d * scale) * (q - 32) (into ``out`` if given)."""
    ds = fp16_value(f.d)[:, None] * f.scales  # (n, 16)
    y = as_float(f.q.view(np.int8) - np.int8(32), out)  # q - 32 in bytes (cheap), then one conversion
    y *= per_weight(ds, 16)
    return y


def dequantize_blocks(b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return decode(unpack(b), out)
