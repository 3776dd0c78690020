"""Q3_K: 3-bit signed levels with a 6-bit scale per 16 weights, under one fp16 super-scale.

A super-block of QK_K = 256 weights has 16 groups of 16. Weight e of group j decodes as

    y = (d * (scales[j] - 32)) * (q[e] - 4)        q in 0..7, scales[j] in 0..63

Symmetric (no min). The low 2 bits of each level are packed like Q2_K's, the third
bit goes to ``hmask``. 3.4375 bits per weight.

ggml's C encodes Q3_K faster than this numpy code (unlike the other K-quants): numpy takes
0.94-1.2x C's time on a 2 M-weight matrix and about 2x on a small model's tensors (measured
with benchmarks/codecs.py: 0.84-1.06x and 0.51-0.57x as speed ratios). Its scale search ends
in a coordinate descent of up to 80 steps per group that each depend on the one before: a
few scalar operations in C, but a few dozen numpy calls here, whose fixed cost, paid per
step over ever fewer groups, a small tensor cannot spread over many weights.
"""

from typing import NamedTuple

import numpy as np

from kquant.formats.cops import (
    as_float,
    byte_field,
    c_semantics,
    c_to_int8,
    columns,
    f32,
    fp16_field,
    fp16_value,
    nearest_int,
    per_weight,
    put_field,
    put_fp16,
    seqsum,
    shift_bytes,
    signed_absmax,
    to_fp16,
)
from kquant.formats.q2_k import pack_crumbs, unpack_crumbs
from kquant.formats.q5_k import pack_high_bits, unpack_high_bits
from kquant.formats.search import (
    blocks_and_importance,
    importance_weights,
    make_q3_quants,
    make_qx_quants,
    requantize_levels,
)

QK = 256  # QK_K
TYPE_SIZE = 110
# Weights per encode call: the coordinate descent pays numpy's per-call cost 80 times per
# chunk, whatever its size, so it wants chunks 4x the other formats (see quantize()): 2^20, a whole-file unit.
ENCODE_CHUNK = 1 << 20

# block_q3_K, 110 bytes:
#
# offset  0             32                       96            108    110
# | hmask[32]   | qs[64]                 | scales[12]  | d    |
# | third bit:  | low 2 bits, as Q2_K    | 16 x 6 bits | fp16 |
# | byte e%32,  |                        |             |
# | bit e/32    |                        |             |
#
# scales[12]: the low nibble of scale j is in byte j (j < 8, low nibble) or byte j - 8
# (j >= 8, high nibble); its top 2 bits are in byte 8 + j%4 at bit 2*(j/4).


class Fields(NamedTuple):
    d: np.ndarray  # (n,) float16
    scales: np.ndarray  # (n, 16) uint8 in 0..63 (group scale + 32)
    q: np.ndarray  # (n, 256) uint8 in 0..7 (level + 4)


@c_semantics
def encode(x: np.ndarray) -> Fields:
    """quantize_row_q3_K_ref: x (n, 256) float32 -> Fields.

    The slowest K-quant here relative to C (0.84-1.06x C's speed on a 2 M-weight matrix, 0.51-0.57x
    on a small model's tensors, benchmarks/codecs.py): see the module docstring.
    """
    n = x.shape[0]
    xt = columns(x.reshape(n * 16, 16))  # (16, G)
    scale, _ = make_q3_quants(xt, levels=False)  # the levels only where _requantize needs them
    scale = scale.reshape(n, 16)
    max_scale = signed_absmax(scale, axis=1)
    iscale = f32(-32) / max_scale
    # int8_t l = nearest_int(...): the store wraps to int8 before the clamp.
    s = np.clip(c_to_int8(nearest_int(iscale[:, None] * scale)), -32, 31) + 32
    nonzero = max_scale != 0
    s = np.where(nonzero[:, None], s, 0).astype(np.uint8)
    d = to_fp16(np.where(nonzero, f32(1) / iscale, f32(0)))
    return _requantize(x, lambda groups: make_q3_quants(xt[:, groups])[1], d, s)


@c_semantics
def encode_impl(rows: np.ndarray, imatrix: np.ndarray) -> Fields:
    """quantize_row_q3_K_impl: rows (r, n_per_row) float32 and imatrix (n_per_row,) -> Fields.

    Each group is fitted by make_qx_quants with importance weights (no coordinate
    descent), and the 16 group scales themselves by make_qx_quants, weighted by each
    group's total importance, which gives the 6-bit scales directly.
    """
    x, qw = blocks_and_importance(rows, imatrix, QK)
    n = x.shape[0]
    xb = np.ascontiguousarray(x.T)  # (256, n)
    sigma2 = (f32(2) * seqsum(xb * xb)) / f32(256)
    xt = columns(x.reshape(n * 16, 16))  # (16, G)
    w = importance_weights(xt, columns(qw.reshape(n * 16, 16)), np.repeat(sigma2, 16))
    sw = np.ascontiguousarray(seqsum(w).reshape(n, 16).T)  # (16, n)
    scale, L = make_qx_quants(xt, 4, qw=w)
    d_block, Ls = make_qx_quants(np.ascontiguousarray(scale.reshape(n, 16).T), 32, qw=sw)
    return _requantize(x, lambda groups: L[:, groups], to_fp16(d_block), np.ascontiguousarray(Ls.T))


def _requantize(x: np.ndarray, levels_of, d: np.ndarray, s: np.ndarray) -> Fields:
    """Round every weight again against d * (s - 32); a group whose scale is 0 keeps its levels.

    x: (n, 256) blocks; levels_of(groups): the search's levels (+4), (16, len(groups)), of those
    groups (C skips a group whose scale is 0: rare, so the levels are asked for only then).
    """
    n = d.shape[0]
    dq = (fp16_value(d)[:, None] * (s.astype(np.int8) - np.int8(32))).reshape(-1)  # (G,)
    L = None
    if not dq.all():
        groups = (dq == 0).nonzero()[0]
        L = np.zeros((16, dq.size), dtype=np.uint8)
        L[:, groups] = levels_of(groups)
    q = requantize_levels(x.reshape(-1, 16), dq, None, -4, 3, L)
    return Fields(d, s, q.reshape(n, 256))


def pack_scales(s: np.ndarray) -> np.ndarray:
    """(n, 16) 6-bit values -> (n, 12) bytes (layout above)."""
    out = np.empty((s.shape[0], 12), dtype=np.uint8)
    out[:, 0:8] = (s[:, 0:8] & 0xF) | ((s[:, 8:16] & 0xF) << 4)
    hi = (s >> 4).reshape(-1, 4, 4)  # [j / 4, j % 4]
    out[:, 8:12] = hi[:, 0] | (hi[:, 1] << 2) | (hi[:, 2] << 4) | (hi[:, 3] << 6)
    return out


def unpack_scales(b: np.ndarray) -> np.ndarray:
    """(n, 12) bytes -> (n, 16) 6-bit values."""
    t = np.ascontiguousarray(byte_field(b).T)  # (12, n): byte rows, so each step runs along all blocks
    low = np.concatenate([t[0:8] & 0xF, t[0:8] >> 4])  # (16, n)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)[:, None, None]
    hi = ((t[None, 8:12] >> shifts) & 3).reshape(16, -1)  # scale j: byte 8 + j % 4, bits 2 * (j // 4)
    return (low | (hi << 4)).T


def pack(f: Fields) -> np.ndarray:
    out = np.empty((f.q.shape[0], TYPE_SIZE), dtype=np.uint8)
    put_field(out, 0, pack_high_bits(shift_bytes(f.q, -2)))  # bit set when the level is >= 0 (q >= 4)
    put_field(out, 32, pack_crumbs(f.q & 3))  # put_field: one item copy per block, not a row copy
    out[:, 96:108] = pack_scales(f.scales)
    put_fp16(out, 108, f.d)
    return out


def unpack(b: np.ndarray) -> Fields:
    q = shift_bytes(unpack_high_bits(b[:, 0:32]), 2)  # the third bit (8 bytes at a time) ...
    q |= unpack_crumbs(b[:, 32:96])  # ... over the low two
    return Fields(fp16_field(b[:, 108:110]), unpack_scales(b[:, 96:108]), q)


def decode(f: Fields, out: np.ndarray | None = None) -> np.ndarray:
    """dequantize_row_q3_K: (d * (scale - 32)) * (q - 4) (into ``out`` if given)."""
    dl = fp16_value(f.d)[:, None] * (f.scales.astype(np.int8) - np.int8(32))  # (n, 16)
    y = as_float(f.q.view(np.int8) - np.int8(4), out)  # q - 4 in bytes (cheap), then one conversion
    y *= per_weight(dl, 16)
    return y


def dequantize_blocks(b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return decode(unpack(b), out)
